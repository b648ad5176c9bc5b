using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>An owned Linux file descriptor; -1 is the invalid value, 0 is a real descriptor.</summary>
public sealed class FileDescriptor : SafeHandle
{
    public FileDescriptor(int fd, bool ownsHandle = true) : base(new nint(-1), ownsHandle) => SetHandle(fd);

    public override bool IsInvalid => handle == -1;

    /// <summary>The raw number, for a call made while the owner keeps this object alive.</summary>
    public int Fd => (int)handle;

    public static FileDescriptor Open(string path, int flags, int mode = 0)
    {
        int fd = Libc.Open(path, flags | Libc.O_CLOEXEC, mode);
        if (fd < 0)
        {
            throw new SysError($"open({path})", Libc.LastErrno);
        }
        return new FileDescriptor(fd);
    }

    protected override bool ReleaseHandle() => Libc.Close((int)handle) == 0;
}
