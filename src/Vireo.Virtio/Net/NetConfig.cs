using System.Globalization;

namespace Vireo.Virtio.Net;

/// <summary>
/// A network interface as the API and CLI accept it: `tap=NAME[,mac=..]` for a TAP device, or
/// `unix=PATH,peer=PATH[,mac=..]` for a Unix datagram socket joined to another VM's (no root needed).
/// </summary>
public sealed record NetConfig(string? Tap, string? UnixPath, string? UnixPeer, byte[] Mac)
{
    /// <summary>Parses the CLI form; throws <see cref="FormatException"/> naming the bad part.</summary>
    public static NetConfig Parse(string text, int index)
    {
        string? tap = null, unix = null, peer = null;
        byte[] mac = [0x52, 0x54, 0x00, 0x56, 0x49, (byte)index]; // locally administered, "VI" + index
        foreach (var part in text.Split(','))
        {
            int eq = part.IndexOf('=');
            string key = eq < 0 ? part : part[..eq], value = eq < 0 ? "" : part[(eq + 1)..];
            switch (key)
            {
                case "tap" when TapNameProblem(value) is { } problem:
                    throw new FormatException($"net: '{part}': {problem}");
                case "tap":
                    tap = value;
                    break;
                case "unix" or "peer" when value.Length > 0 && !Interop.UnixSocket.PathFits(value):
                    throw new FormatException($"net: '{part}': a socket path is at most {Interop.UnixSocket.MaxPathBytes} bytes");
                case "unix" when value.Length > 0:
                    unix = value;
                    break;
                case "peer" when value.Length > 0:
                    peer = value;
                    break;
                case "mac":
                    mac = ParseMac(value);
                    break;
                default:
                    throw new FormatException($"net: unknown or empty option '{part}' (known: tap=NAME, unix=PATH, peer=PATH, mac=XX:XX:XX:XX:XX:XX)");
            }
        }
        if ((tap is null) == (unix is null))
        {
            throw new FormatException("net: give exactly one backend: tap=NAME or unix=PATH,peer=PATH");
        }
        if (unix is not null && peer is null)
        {
            throw new FormatException("net: unix=PATH needs peer=PATH, the other end's socket");
        }
        return new NetConfig(tap, unix, peer, mac);
    }

    /// <summary>
    /// A TAP interface as the API gives it (host_dev_name, guest_mac), checked as <see cref="Parse"/>
    /// checks tap= and mac=; throws <see cref="FormatException"/> naming the API's field.
    /// </summary>
    public static NetConfig ForTap(string hostDevName, string? guestMac, int index)
    {
        if (TapNameProblem(hostDevName) is { } problem)
        {
            throw new FormatException($"host_dev_name '{hostDevName}': {problem}");
        }
        byte[] mac = [0x52, 0x54, 0x00, 0x56, 0x49, (byte)index];
        if (guestMac is not null && !TryParseMac(guestMac, out mac, out string? macProblem))
        {
            throw new FormatException($"guest_mac '{guestMac}' {macProblem}");
        }
        return new NetConfig(hostDevName, null, null, mac);
    }

    /// <summary>Why <paramref name="name"/> cannot name a TAP device, or null.</summary>
    private static string? TapNameProblem(string name) =>
        name.Length is >= 1 and <= 15 && System.Text.Encoding.UTF8.GetByteCount(name) <= 15 ? null
        : IsHandedOver(name) ? null
        : "a TAP name is 1 to 15 characters (or /proc/self/fd/N, a TAP handed over open)";

    /// <summary>`/proc/self/fd/N`: a TAP this process was handed open, which a sandboxed VMM could not open itself.</summary>
    private static bool IsHandedOver(string name) =>
        name.StartsWith("/proc/self/fd/", StringComparison.Ordinal) && name.Length is > 14 and <= 24 && name.AsSpan(14).IndexOfAnyExceptInRange('0', '9') < 0;

    private static byte[] ParseMac(string text) =>
        TryParseMac(text, out var mac, out string? problem) ? mac : throw new FormatException($"net: '{text}' {problem}");

    private static bool TryParseMac(string text, out byte[] mac, out string? problem)
    {
        var parts = text.Split(':');
        var bytes = new byte[6];
        mac = bytes;
        problem = null;
        if (parts.Length != 6 || !parts.Select((p, i) => byte.TryParse(p, NumberStyles.HexNumber, null, out bytes[i]) && p.Length == 2).All(ok => ok))
        {
            problem = "is not a MAC address (XX:XX:XX:XX:XX:XX)";
        }
        else if ((bytes[0] & 1) != 0)
        {
            problem = "is a multicast address; an interface needs a unicast MAC";
        }
        return problem is null;
    }
}
