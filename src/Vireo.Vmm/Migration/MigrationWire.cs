using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace Vireo.Vmm.Migration;

/// <summary>
/// The migration stream: "VIREOMIG", a u32 version, then frames of a 4-byte tag, a u32 length and
/// that many bytes. The source sends CONF (the VM's config, JSON), then either PAGE frames (a
/// u64 guest address and whole pages) in rounds, or, in a local migration (announced by LOCL
/// before CONF), MEMF (the memfd itself, passed with the frame's one byte) and a TAPF for each
/// TAP the VM has, in the config's order (the TAP's descriptor, the same way), then STOP, which
/// the destination answers once it watches for the pause's frames (the source pauses the guest
/// only then), the last pages, then STAT (the machine's state, in the snapshot file's format), and once the destination has said the state is
/// whole and fits, CMIT. The destination answers CONF, MEMF, STOP and STAT with OKAY, or FAIL and its
/// reason; it answers STAT before it applies the state, which it does while the commit travels,
/// and its last word, after CMIT, is OKAY (the VM runs there) or FAIL (KVM refused the state after
/// all: the VM goes on at the source). Every length is bounded before a byte of its payload is read.
/// </summary>
public static class MigrationWire
{
    public static ReadOnlySpan<byte> Magic => "VIREOMIG"u8;
    public const uint Version = 3; // 2: the destination answers STAT before it applies it, and says a last word after CMIT; 3: STOP
    public const int HeaderSize = 12, FrameHeaderSize = 8;

    public const string Local = "LOCL", Config = "CONF", MemoryFd = "MEMF", TapFd = "TAPF", Pages = "PAGE", Stopping = "STOP", State = "STAT", Commit = "CMIT",
        Okay = "OKAY", Fail = "FAIL";

    public const int MaxConfig = 1 << 20, MaxPageBytes = 4 << 20, MaxText = 4096;

    /// <summary>The largest payload a frame of <paramref name="tag"/> may carry; -1 for a tag this version does not know.</summary>
    public static long MaxPayload(string tag) => tag switch
    {
        Config => MaxConfig,
        MemoryFd or TapFd => 1,
        Local or Stopping => 0,
        Pages => 8 + MaxPageBytes,
        State => Snapshot.SnapshotFile.MaxSize,
        Commit or Okay => 0,
        Fail => MaxText,
        _ => -1,
    };
}

/// <summary>Waits in the guest's pause.</summary>
internal static class PauseWait
{
    /// <summary>How long a thread in the pause spins for its peer's answer before it sleeps on the socket.</summary>
    public static readonly TimeSpan Spin = TimeSpan.FromMilliseconds(2);

    /// <summary>
    /// How long a destination, once told STOP, spins for each next frame before it sleeps on the
    /// socket: a thread asleep in the pause took its wake-up from this host's scheduler, up to 16 ms
    /// when it woke on an idle CPU, in half the runs of one bench. 5 ms covers an idle guest's whole
    /// stop-and-copy many times over; a longer gap is read by a sleeping thread, whose wake-up is
    /// then the lesser part of it.
    /// </summary>
    public static readonly TimeSpan StopSpin = TimeSpan.FromMilliseconds(5);

    /// <summary>
    /// Spins until <paramref name="socket"/> has bytes to read, or <see cref="Spin"/> has passed: an
    /// answer in the guest's pause is then read as it arrives, not after the thread's wake-up (up to
    /// half a millisecond on this host). The read that follows blocks as usual, and reports a
    /// closed or failed socket.
    /// </summary>
    public static void UntilReadable(Socket socket) => UntilReadable(socket, Spin);

    /// <summary><see cref="UntilReadable(Socket)"/>, spinning up to <paramref name="spin"/>.</summary>
    public static void UntilReadable(Socket socket, TimeSpan spin)
    {
        long until = System.Diagnostics.Stopwatch.GetTimestamp() + (long)(spin.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
        try
        {
            while (socket.Available == 0 && System.Diagnostics.Stopwatch.GetTimestamp() < until)
            {
                Thread.Yield(); // a peer on this CPU (the other end, on a small host) runs first
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // the read says what became of the connection
        }
    }
}

/// <summary>Writes frames to a stream.</summary>
internal sealed class WireWriter(Stream stream)
{
    private readonly byte[] _header = new byte[MigrationWire.FrameHeaderSize];

    public long BytesWritten { get; private set; }

    public void Start()
    {
        Span<byte> h = stackalloc byte[MigrationWire.HeaderSize];
        MigrationWire.Magic.CopyTo(h);
        BinaryPrimitives.WriteUInt32LittleEndian(h[8..], MigrationWire.Version);
        Write(h);
    }

    public void FrameHeader(string tag, int length)
    {
        Encoding.ASCII.GetBytes(tag, _header);
        BinaryPrimitives.WriteUInt32LittleEndian(_header.AsSpan(4), (uint)length);
        Write(_header);
    }

    public void Frame(string tag, ReadOnlySpan<byte> payload)
    {
        FrameHeader(tag, payload.Length);
        if (!payload.IsEmpty)
        {
            Write(payload); // never a send of nothing: once the peer has read the header and gone, that one fails with EPIPE
        }
    }

    public void Write(ReadOnlySpan<byte> bytes)
    {
        stream.Write(bytes);
        BytesWritten += bytes.Length;
    }

    public void Flush() => stream.Flush();
}

/// <summary>Reads frames from an untrusted stream, keeping the byte offset every error names.</summary>
internal sealed class WireReader(Stream stream)
{
    public long Offset { get; private set; }

    public void Start()
    {
        Span<byte> h = stackalloc byte[MigrationWire.HeaderSize];
        Read(h, "the stream's header");
        if (!h[..8].SequenceEqual(MigrationWire.Magic))
        {
            throw new MigrationException("byte 0: this is not a Vireo migration stream (it does not start with VIREOMIG)");
        }
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(h[8..]);
        if (version != MigrationWire.Version)
        {
            throw new MigrationException($"byte 8: the stream's format is version {version}; this Vireo reads version {MigrationWire.Version}");
        }
    }

    /// <summary>The next frame's tag and length, checked against the tag's bound.</summary>
    public (string Tag, int Length) Next()
    {
        long at = Offset;
        Span<byte> h = stackalloc byte[MigrationWire.FrameHeaderSize];
        Read(h, "a frame header");
        string tag = Encoding.ASCII.GetString(h[..4]);
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(h[4..]);
        long max = MigrationWire.MaxPayload(tag);
        if (max < 0)
        {
            throw new MigrationException($"byte {at}: a frame of unknown kind '{Printable(tag)}'");
        }
        if (length > max)
        {
            throw new MigrationException($"byte {at}: a {tag} frame of {length} bytes; it holds at most {max}");
        }
        return (tag, (int)length);
    }

    public void Read(Span<byte> into, string what)
    {
        int done = 0;
        while (done < into.Length)
        {
            int n;
            try
            {
                n = stream.Read(into[done..]);
            }
            catch (IOException e)
            {
                throw new MigrationException($"byte {Offset}: the connection failed while reading {what}: {(e.InnerException ?? e).Message}");
            }
            if (n == 0)
            {
                throw new MigrationException($"byte {Offset}: the stream ended in the middle of {what}");
            }
            done += n;
            Offset += n;
        }
    }

    public byte[] Payload(int length, string what)
    {
        var bytes = new byte[length];
        Read(bytes, what);
        return bytes;
    }

    /// <summary>Counts bytes read outside <see cref="Read"/> (a descriptor's byte, read with recvmsg).</summary>
    public void Skipped(int bytes) => Offset += bytes;

    public static string Printable(string tag) => tag.All(c => c is >= ' ' and <= '~') ? tag : "(unreadable tag)";
}
