using System.Globalization;
using System.Text;

namespace Vireo.Cli.Import;

/// <summary>
/// The xl.cfg syntax (xl.cfg(5)): `KEY = VALUE` settings separated by newlines or ';', where a
/// value is a number, a 'string' or "string", or a [list] of those; '#' starts a comment.
/// Parse errors name the line.
/// </summary>
internal static class XlConfig
{
    /// <summary>A value: string, long, or List&lt;object&gt;; with the line it was set on.</summary>
    internal sealed record Setting(string Key, object Value, int Line);

    public static List<Setting> Parse(string text)
    {
        var settings = new List<Setting>();
        var p = new Parser(text);
        while (true)
        {
            p.SkipSpace(newlines: true);
            if (p.AtEnd)
            {
                return settings;
            }
            int line = p.Line;
            string key = p.Identifier();
            p.SkipSpace(newlines: false);
            p.Expect('=');
            p.SkipSpace(newlines: false);
            object value = p.Value();
            if (settings.Any(s => s.Key == key))
            {
                settings.RemoveAll(s => s.Key == key); // the last setting wins, as in xl
            }
            settings.Add(new Setting(key, value, line));
            p.SkipSpace(newlines: false);
            if (!p.AtEnd && !p.TakeIf('\n') && !p.TakeIf(';'))
            {
                throw p.Error("expected the end of the line after the value");
            }
        }
    }

    private sealed class Parser(string text)
    {
        private int _at;
        public int Line { get; private set; } = 1;
        public bool AtEnd => _at >= text.Length;

        public FormatException Error(string why) => new($"line {Line}: {why}");

        public void SkipSpace(bool newlines)
        {
            while (!AtEnd)
            {
                char c = text[_at];
                if (c == '#')
                {
                    while (!AtEnd && text[_at] != '\n')
                    {
                        _at++;
                    }
                }
                else if (c is ' ' or '\t' or '\r' || (newlines && (c == '\n' || c == ';')))
                {
                    if (c == '\n')
                    {
                        Line++;
                    }
                    _at++;
                }
                else
                {
                    return;
                }
            }
        }

        public bool TakeIf(char c)
        {
            if (!AtEnd && text[_at] == c)
            {
                if (c == '\n')
                {
                    Line++;
                }
                _at++;
                return true;
            }
            return false;
        }

        public void Expect(char c)
        {
            if (!TakeIf(c))
            {
                throw Error(AtEnd ? $"expected '{c}', found the end of the file" : $"expected '{c}', found '{text[_at]}'");
            }
        }

        public string Identifier()
        {
            int start = _at;
            while (!AtEnd && (char.IsAsciiLetterOrDigit(text[_at]) || text[_at] == '_'))
            {
                _at++;
            }
            return _at > start ? text[start.._at] : throw Error($"expected a setting name, found '{text[_at]}'");
        }

        public object Value()
        {
            if (AtEnd)
            {
                throw Error("expected a value, found the end of the file");
            }
            char c = text[_at];
            if (c is '"' or '\'')
            {
                return String(c);
            }
            if (c == '[')
            {
                _at++;
                var list = new List<object>();
                while (true)
                {
                    SkipSpace(newlines: true);
                    if (TakeIf(']'))
                    {
                        return list;
                    }
                    list.Add(Value());
                    SkipSpace(newlines: true);
                    if (TakeIf(']'))
                    {
                        return list;
                    }
                    Expect(',');
                }
            }
            int start = _at;
            while (!AtEnd && (char.IsAsciiHexDigit(text[_at]) || text[_at] is 'x' or 'X' or '-' or '.'))
            {
                _at++;
            }
            string number = text[start.._at];
            if (number.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
                && long.TryParse(number[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long hex))
            {
                return hex;
            }
            return long.TryParse(number, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n) ? n
                : throw Error($"expected a number, a quoted string or a [list], found '{(number.Length > 0 ? number : c.ToString())}'");
        }

        private string String(char quote)
        {
            _at++;
            var sb = new StringBuilder();
            while (true)
            {
                if (AtEnd || text[_at] == '\n')
                {
                    throw Error("a string is not closed");
                }
                char c = text[_at++];
                if (c == quote)
                {
                    return sb.ToString();
                }
                if (c == '\0' || c == '\\' && !AtEnd && text[_at] == '\0')
                {
                    throw Error("a string holds a NUL character"); // no name or path can (the fuzzer's: Path.GetFullPath threw on one)
                }
                if (c == '\\' && !AtEnd)
                {
                    char e = text[_at++];
                    sb.Append(e switch { 'n' => '\n', 't' => '\t', _ => e });
                    continue;
                }
                sb.Append(c);
            }
        }
    }
}
