using System.CommandLine;

namespace Vireo.Cli.Manage;

/// <summary>
/// `vireo completion bash|zsh`: a script that asks vireo itself for completions through
/// System.CommandLine's [suggest] directive, so commands, options and VM names (from vireod) complete.
/// </summary>
internal static class CompletionCommand
{
    public static Command Create()
    {
        var shell = new Argument<string>("shell") { Description = "bash or zsh" };
        shell.AcceptOnlyFromAmong("bash", "zsh");
        var command = new Command("completion", "Print a shell completion script: eval \"$(vireo completion bash)\"") { shell };
        command.SetAction(p =>
        {
            string script = """
                _vireo_complete() {
                    local IFS=$'\n'
                    COMPREPLY=( $(compgen -W "$(vireo "[suggest:${#COMP_LINE}]" "$COMP_LINE" 2>/dev/null)" -- "${COMP_WORDS[COMP_CWORD]}") )
                }
                complete -o default -F _vireo_complete vireo
                """;
            if (p.GetValue(shell) == "zsh")
            {
                script = "autoload -U +X bashcompinit && bashcompinit\n" + script;
            }
            Console.WriteLine(script);
            return 0;
        });
        return command;
    }
}
