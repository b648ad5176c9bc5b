namespace Vireo.Virtio.Queue;

/// <summary>Why a guest-supplied queue or descriptor chain was refused. Any of these puts the device in NEEDS_RESET.</summary>
public enum QueueError
{
    None,
    SizeNotPowerOfTwo,
    SizeTooLarge,
    RingMisaligned,
    RingOutsideMemory,
    AvailIndexJumped,
    HeadOutOfRange,
    NextOutOfRange,
    ChainTooLong,
    BufferOutsideMemory,
    IndirectNotNegotiated,
    IndirectTableInvalid,
    IndirectNested,
    IndirectWithNext,
    WriteBeforeRead,
    UsedLengthTooLarge,
}
