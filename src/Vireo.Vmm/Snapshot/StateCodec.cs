using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vireo.Interop;
using Vireo.Kvm;

namespace Vireo.Vmm.Snapshot;

/// <summary>
/// The binary sections of a snapshot: KVM's structs as the kernel lays them out (little-endian,
/// their sizes checked against the headers by the ABI test), counts before arrays. Reading is
/// bounds-checked at every step and names the byte offset of what is wrong.
/// </summary>
internal static class StateCodec
{
    public static byte[] Encode(VcpuState s)
    {
        var w = new Writer();
        w.U32((uint)s.Id);
        w.Struct(s.Regs);
        w.Struct(s.Sregs);
        w.Bytes(s.Xsave);
        w.U32((uint)s.Xcrs.Length);
        foreach (var x in s.Xcrs)
        {
            w.U32(x.Index);
            w.U64(x.Value);
        }
        w.Struct(s.Debugregs);
        w.OptionalBytes(s.Lapic);
        w.U32((uint)s.Msrs.Length);
        foreach (var m in s.Msrs)
        {
            w.U32(m.Index);
            w.U64(m.Value);
        }
        w.Struct(s.Events);
        w.U32(s.MpState);
        w.U32(s.TscKhz);
        w.U32((uint)s.Cpuid.Length);
        foreach (var e in s.Cpuid)
        {
            w.Struct(e);
        }
        return w.ToArray();
    }

    public static VcpuState DecodeVcpu(ReadOnlySpan<byte> data, string section)
    {
        var r = new Reader(data, section);
        int id = (int)r.U32("id");
        var regs = r.Struct<kvm_regs>("regs");
        var sregs = r.Struct<kvm_sregs>("sregs");
        var xsave = r.Bytes("xsave", VcpuState.MaxXsaveSize);
        var xcrs = new XcrValue[r.Count("xcrs", 16)];
        for (int i = 0; i < xcrs.Length; i++)
        {
            xcrs[i] = new XcrValue(r.U32("xcr index"), r.U64("xcr value"));
        }
        var debugregs = r.Struct<kvm_debugregs>("debugregs");
        var lapic = r.OptionalBytes("lapic", VcpuState.LapicSize);
        var msrs = new MsrValue[r.Count("msrs", 1024)];
        for (int i = 0; i < msrs.Length; i++)
        {
            msrs[i] = new MsrValue(r.U32("msr index"), r.U64("msr value"));
        }
        var events = r.Struct<kvm_vcpu_events>("vcpu events");
        uint mp = r.U32("mp state");
        uint tsc = r.U32("tsc khz");
        var cpuid = new kvm_cpuid_entry2[r.Count("cpuid", VcpuState.MaxCpuidEntries)];
        for (int i = 0; i < cpuid.Length; i++)
        {
            cpuid[i] = r.Struct<kvm_cpuid_entry2>("cpuid entry");
        }
        r.End();
        return new VcpuState
        {
            Id = id, Regs = regs, Sregs = sregs, Xsave = xsave, Xcrs = xcrs, Debugregs = debugregs, Lapic = lapic,
            Msrs = msrs, Events = events, MpState = mp, TscKhz = tsc, Cpuid = cpuid,
        };
    }

    public static byte[] Encode(KvmVmState s)
    {
        var w = new Writer();
        w.Struct(s.Clock);
        w.OptionalBytes(s.PicMaster);
        w.OptionalBytes(s.PicSlave);
        w.OptionalBytes(s.Ioapic);
        w.U32(s.Pit is null ? 0u : 1u);
        if (s.Pit is { } pit)
        {
            w.Struct(pit);
        }
        return w.ToArray();
    }

    public static KvmVmState DecodeVm(ReadOnlySpan<byte> data, string section)
    {
        var r = new Reader(data, section);
        var clock = r.Struct<kvm_clock_data>("clock");
        var master = r.OptionalBytes("PIC master", 4096);
        var slave = r.OptionalBytes("PIC slave", 4096);
        var ioapic = r.OptionalBytes("IOAPIC", 4096);
        kvm_pit_state2? pit = r.U32("PIT present") switch
        {
            0 => null,
            1 => r.Struct<kvm_pit_state2>("PIT"),
            var v => throw r.Error($"PIT present is {v}; 0 or 1"),
        };
        r.End();
        return new KvmVmState { Clock = clock, PicMaster = master, PicSlave = slave, Ioapic = ioapic, Pit = pit };
    }

    private sealed class Writer
    {
        private readonly MemoryStream _s = new();

        public void U32(uint v)
        {
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(b, v);
            _s.Write(b);
        }

        public void U64(ulong v)
        {
            Span<byte> b = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(b, v);
            _s.Write(b);
        }

        public void Struct<T>(in T value) where T : unmanaged => _s.Write(MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)));

        public void Bytes(byte[] b)
        {
            U32((uint)b.Length);
            _s.Write(b);
        }

        public void OptionalBytes(byte[]? b)
        {
            if (b is null)
            {
                U32(uint.MaxValue);
                return;
            }
            Bytes(b);
        }

        public byte[] ToArray() => _s.ToArray();
    }

    private ref struct Reader(ReadOnlySpan<byte> data, string section)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _at;

        public SnapshotException Error(string what) => new($"{section}, byte {_at} of its payload: {what}");

        private ReadOnlySpan<byte> Take(int n, string field)
        {
            if (n < 0 || n > _data.Length - _at)
            {
                throw Error($"{field} needs {n} bytes but only {_data.Length - _at} remain");
            }
            var s = _data.Slice(_at, n);
            _at += n;
            return s;
        }

        public uint U32(string field) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, field));
        public ulong U64(string field) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, field));
        public T Struct<T>(string field) where T : unmanaged => MemoryMarshal.Read<T>(Take(Unsafe.SizeOf<T>(), field));

        public int Count(string field, int max)
        {
            uint n = U32(field);
            return n <= (uint)max ? (int)n : throw Error($"{field}: {n} entries; at most {max}");
        }

        public byte[] Bytes(string field, int max)
        {
            uint n = U32(field);
            return n <= (uint)max ? Take((int)n, field).ToArray() : throw Error($"{field}: {n} bytes; at most {max}");
        }

        public byte[]? OptionalBytes(string field, int max)
        {
            uint n = U32(field);
            if (n == uint.MaxValue)
            {
                return null;
            }
            return n <= (uint)max ? Take((int)n, field).ToArray() : throw Error($"{field}: {n} bytes; at most {max}");
        }

        public readonly void End()
        {
            if (_at != _data.Length)
            {
                throw new SnapshotException($"{section}: {_data.Length - _at} bytes follow its last field");
            }
        }
    }
}
