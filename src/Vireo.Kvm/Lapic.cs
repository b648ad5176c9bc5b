using System.Buffers.Binary;
using Vireo.Interop;

namespace Vireo.Kvm;

/// <summary>Register access into a kvm_lapic_state (the 1 KiB APIC register page).</summary>
public static unsafe class Lapic
{
    public const int RegLvt0 = 0x350, RegLvt1 = 0x360;
    public const uint DeliveryExtInt = 0x700, DeliveryNmi = 0x400;

    public static uint Get(in kvm_lapic_state state, int offset)
    {
        fixed (byte* p = state.regs)
        {
            // SAFETY: offset is one of the APIC register offsets, all below 1024 - 4.
            return BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(p + offset, 4));
        }
    }

    public static void Set(ref kvm_lapic_state state, int offset, uint value)
    {
        fixed (byte* p = state.regs)
        {
            // SAFETY: as in Get.
            BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(p + offset, 4), value);
        }
    }

    /// <summary>LINT0 as ExtINT (the PIC's output) and LINT1 as NMI, as a BIOS leaves them.</summary>
    public static void ConfigureLint(KvmVcpu vcpu)
    {
        var state = vcpu.GetLapic();
        Set(ref state, RegLvt0, (Get(state, RegLvt0) & ~0x700u) | DeliveryExtInt);
        Set(ref state, RegLvt1, (Get(state, RegLvt1) & ~0x700u) | DeliveryNmi);
        vcpu.SetLapic(state);
    }
}
