using Vireo.Api.Definitions;
using Vireo.Cli.Manage;

namespace Vireo.Cli;

/// <summary>
/// Reads a definition or an xl.cfg that a user names ('-' for standard input), never more than a
/// definition may hold: `vireo create /dev/zero` is refused after 1 MiB instead of filling memory.
/// </summary>
internal static class TextFile
{
    public static string Read(string path)
    {
        try
        {
            if (path != "-" && !File.Exists(path))
            {
                throw new CliException(ExitCodes.BadInput, Directory.Exists(path) ? $"{path}: a directory, not a file" : $"{path}: no such file");
            }
            using var stream = path == "-" ? Console.OpenStandardInput() : new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
            using var reader = new StreamReader(stream);
            var buffer = new char[DefinitionReader.MaxLength + 1];
            int length = reader.ReadBlock(buffer, 0, buffer.Length);
            if (length > DefinitionReader.MaxLength)
            {
                throw new CliException(ExitCodes.BadInput, $"{(path == "-" ? "standard input" : path)}: longer than {DefinitionReader.MaxLength} characters; a definition is far smaller");
            }
            return new string(buffer, 0, length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException(ExitCodes.BadInput, $"{path}: {e.Message}");
        }
    }
}
