using System.Text;

namespace Vireo.VmmServer.Http;

/// <summary>
/// An HTTP/1.1 request's line and headers (RFC 9112), parsed from bytes a client sent and trusted
/// for nothing: every limit is checked, and anything this API does not need (obsolete line
/// folding, a body framed two ways, a transfer coding other than chunked) is refused by name.
/// </summary>
public sealed record RequestHead(string Method, string Target, bool Http10, long? ContentLength, bool Chunked, bool ExpectContinue, bool Close)
{
    /// <summary>The most a request line and its headers may take together (Kestrel's default is 32 KiB).</summary>
    public const int MaxSize = 32 * 1024;

    /// <summary>The most header lines a request may have.</summary>
    public const int MaxHeaders = 100;

    /// <summary>
    /// Parses a head: the bytes before the blank line, without it. Null and the head, or the reason
    /// it is refused (a 400's words).
    /// </summary>
    public static string? TryParse(ReadOnlySpan<byte> head, out RequestHead? parsed)
    {
        parsed = null;
        int eol = head.IndexOf("\r\n"u8);
        var line = eol < 0 ? head : head[..eol];
        var rest = eol < 0 ? [] : head[(eol + 2)..];

        int sp1 = line.IndexOf((byte)' ');
        int sp2 = sp1 < 0 ? -1 : line[(sp1 + 1)..].IndexOf((byte)' ');
        if (sp1 <= 0 || sp2 <= 0)
        {
            return "the request line is not METHOD TARGET HTTP/1.1";
        }
        sp2 += sp1 + 1;
        var method = line[..sp1];
        var target = line[(sp1 + 1)..sp2];
        var version = line[(sp2 + 1)..];
        foreach (byte b in method)
        {
            if (b is < (byte)'A' or > (byte)'Z')
            {
                return "the request's method is not an upper-case word";
            }
        }
        if (target.Length == 0 || target[0] != (byte)'/')
        {
            return "the request's target must be a path that starts with /";
        }
        foreach (byte b in target)
        {
            if (b <= 0x20 || b >= 0x7f)
            {
                return "the request's target has a space, a control character or a byte outside ASCII";
            }
        }
        bool http10;
        if (version.SequenceEqual("HTTP/1.1"u8))
        {
            http10 = false;
        }
        else if (version.SequenceEqual("HTTP/1.0"u8))
        {
            http10 = true;
        }
        else
        {
            return "the request's version is not HTTP/1.1 or HTTP/1.0";
        }

        long? length = null;
        bool chunked = false, expectContinue = false, close = false, keepAlive = false;
        int count = 0;
        while (!rest.IsEmpty)
        {
            eol = rest.IndexOf("\r\n"u8);
            var header = eol < 0 ? rest : rest[..eol];
            rest = eol < 0 ? [] : rest[(eol + 2)..];
            if (++count > MaxHeaders)
            {
                return $"the request has more than {MaxHeaders} headers";
            }
            if (header.Length > 0 && header[0] is (byte)' ' or (byte)'\t')
            {
                return $"header line {count} is folded onto the one before (obsolete line folding is not accepted)";
            }
            int colon = header.IndexOf((byte)':');
            if (colon <= 0 || !IsToken(header[..colon]))
            {
                return $"header line {count} is not NAME: VALUE";
            }
            string name = Encoding.ASCII.GetString(header[..colon]);
            var rawValue = header[(colon + 1)..].Trim(" \t"u8);
            foreach (byte b in rawValue)
            {
                if (b < 0x20 && b != (byte)'\t' || b == 0x7f)
                {
                    return $"header {name} has a control character in its value";
                }
            }
            string value = Encoding.Latin1.GetString(rawValue);
            if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                if (value.Length is 0 or > 18 || !value.All(char.IsAsciiDigit))
                {
                    return $"Content-Length must be a whole number of bytes, got '{Clip(value)}'";
                }
                long n = long.Parse(value, System.Globalization.CultureInfo.InvariantCulture);
                if (length is { } before && before != n)
                {
                    return "Content-Length is given twice with different values";
                }
                length = n;
            }
            else if (name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
            {
                if (!value.Equals("chunked", StringComparison.OrdinalIgnoreCase) || chunked)
                {
                    return $"Transfer-Encoding '{Clip(value)}' is not supported: only chunked is";
                }
                chunked = true;
            }
            else if (name.Equals("Expect", StringComparison.OrdinalIgnoreCase))
            {
                if (!value.Equals("100-continue", StringComparison.OrdinalIgnoreCase))
                {
                    return $"Expect '{Clip(value)}' is not supported: only 100-continue is";
                }
                expectContinue = !http10;
            }
            else if (name.Equals("Connection", StringComparison.OrdinalIgnoreCase))
            {
                foreach (string option in value.Split(','))
                {
                    close |= option.Trim().Equals("close", StringComparison.OrdinalIgnoreCase);
                    keepAlive |= option.Trim().Equals("keep-alive", StringComparison.OrdinalIgnoreCase);
                }
            }
        }
        if (chunked && length is not null)
        {
            return "the request gives both Content-Length and Transfer-Encoding: its body's length would be ambiguous";
        }
        // HTTP/1.1 keeps the connection unless the client says close; HTTP/1.0 only if it asks to.
        close |= http10 && !keepAlive;
        parsed = new RequestHead(Encoding.ASCII.GetString(method), Encoding.ASCII.GetString(target), http10, length, chunked, expectContinue, close);
        return null;
    }

    /// <summary>The target's path split into segments, each percent-decoded, and the query dropped: "/drives/my%20disk?x" is ["drives", "my disk"].</summary>
    public string[] PathSegments()
    {
        string path = Target;
        int q = path.IndexOfAny(['?', '#']);
        if (q >= 0)
        {
            path = path[..q];
        }
        var segments = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < segments.Length; i++)
        {
            segments[i] = Uri.UnescapeDataString(segments[i]);
        }
        return segments;
    }

    private static bool IsToken(ReadOnlySpan<byte> name)
    {
        foreach (byte b in name)
        {
            if (!(char.IsAsciiLetterOrDigit((char)b) || "!#$%&'*+-.^_`|~"u8.Contains(b)))
            {
                return false;
            }
        }
        return true;
    }

    private static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "...";
}
