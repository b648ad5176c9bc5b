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
                case "tap" when value.Length is >= 1 and <= 15:
                    tap = value;
                    break;
                case "tap":
                    throw new FormatException($"net: '{part}': a TAP name is 1 to 15 characters");
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

    private static byte[] ParseMac(string text)
    {
        var parts = text.Split(':');
        var mac = new byte[6];
        if (parts.Length != 6 || !parts.Select((p, i) => byte.TryParse(p, NumberStyles.HexNumber, null, out mac[i]) && p.Length == 2).All(ok => ok))
        {
            throw new FormatException($"net: '{text}' is not a MAC address (XX:XX:XX:XX:XX:XX)");
        }
        if ((mac[0] & 1) != 0)
        {
            throw new FormatException($"net: '{text}' is a multicast address; an interface needs a unicast MAC");
        }
        return mac;
    }
}
