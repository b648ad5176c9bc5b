namespace Vireo.Interop;

/// <summary>A system call that failed, with the call's name and the errno it returned.</summary>
public sealed class SysError(string call, int errno)
    : Exception($"{call} failed: {Libc.StrError(errno)} (errno {errno})")
{
    public string Call { get; } = call;
    public int Errno { get; } = errno;
}

/// <summary>Turns a -1 return into a <see cref="SysError"/>; the one place errno becomes an exception.</summary>
public static class Check
{
    public static int Io(int result, string call)
    {
        if (result < 0)
        {
            throw new SysError(call, Libc.LastErrno);
        }
        return result;
    }

    public static nint Io(nint result, string call)
    {
        if (result < 0)
        {
            throw new SysError(call, Libc.LastErrno);
        }
        return result;
    }
}
