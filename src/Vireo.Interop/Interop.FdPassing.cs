using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>
/// One file descriptor handed to another process over a connected Unix stream socket
/// (SCM_RIGHTS): how a VMM on the same host gives its successor the guest's RAM (the memfd)
/// instead of copying it. The descriptor rides on one byte of data; the receiver must read that
/// byte with <see cref="ReceiveFd"/>, since a plain read of it drops (closes) what came along.
/// </summary>
public static unsafe partial class FdPassing
{
    private const int SOL_SOCKET = 1, SCM_RIGHTS = 1, MSG_CMSG_CLOEXEC = 0x40000000;

    [StructLayout(LayoutKind.Sequential)]
    private struct MsgHdr
    {
        public void* msg_name;
        public uint msg_namelen;
        public iovec* msg_iov;
        public nuint msg_iovlen;
        public void* msg_control;
        public nuint msg_controllen;
        public int msg_flags;
    }

    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } then the data, 8-aligned.
    private const int CmsgHeader = 16, CmsgSpaceOneFd = 24, CmsgLenOneFd = CmsgHeader + sizeof(int);

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    private static partial nint SendMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", EntryPoint = "recvmsg", SetLastError = true)]
    private static partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    /// <summary>Sends the byte <paramref name="tag"/> with <paramref name="fd"/> attached; throws <see cref="SysError"/>.</summary>
    public static void SendFd(int socket, int fd, byte tag)
    {
        byte* control = stackalloc byte[CmsgSpaceOneFd];
        new Span<byte>(control, CmsgSpaceOneFd).Clear();
        *(nuint*)control = CmsgLenOneFd;
        *(int*)(control + 8) = SOL_SOCKET;
        *(int*)(control + 12) = SCM_RIGHTS;
        *(int*)(control + CmsgHeader) = fd;
        var iov = new iovec { iov_base = (nint)(&tag), iov_len = 1 };
        var msg = new MsgHdr { msg_iov = &iov, msg_iovlen = 1, msg_control = control, msg_controllen = CmsgSpaceOneFd };
        nint n;
        do
        {
            n = SendMsg(socket, &msg, 0);
        } while (n < 0 && Libc.LastErrno == Libc.EINTR);
        if (n != 1)
        {
            throw new SysError("sendmsg(SCM_RIGHTS)", n < 0 ? Libc.LastErrno : Libc.EIO);
        }
    }

    /// <summary>
    /// Reads one byte and the descriptor that came with it (close-on-exec); the descriptor is -1
    /// when none came. Throws <see cref="SysError"/>; end of stream reads as EPIPE.
    /// </summary>
    public static (byte Tag, int Fd) ReceiveFd(int socket)
    {
        byte tag = 0;
        byte* control = stackalloc byte[CmsgSpaceOneFd * 2];
        new Span<byte>(control, CmsgSpaceOneFd * 2).Clear();
        var iov = new iovec { iov_base = (nint)(&tag), iov_len = 1 };
        var msg = new MsgHdr { msg_iov = &iov, msg_iovlen = 1, msg_control = control, msg_controllen = CmsgSpaceOneFd * 2 };
        nint n;
        do
        {
            n = RecvMsg(socket, &msg, MSG_CMSG_CLOEXEC);
        } while (n < 0 && Libc.LastErrno == Libc.EINTR);
        if (n <= 0)
        {
            throw new SysError("recvmsg(SCM_RIGHTS)", n < 0 ? Libc.LastErrno : Libc.EPIPE);
        }
        int fd = -1;
        if (msg.msg_controllen >= CmsgLenOneFd && *(int*)(control + 8) == SOL_SOCKET && *(int*)(control + 12) == SCM_RIGHTS)
        {
            int count = (int)((*(nuint*)control - CmsgHeader) / sizeof(int));
            for (int i = 0; i < count; i++)
            {
                int received = *(int*)(control + CmsgHeader + i * sizeof(int));
                if (fd < 0)
                {
                    fd = received;
                }
                else
                {
                    Libc.Close(received); // one was asked for: more are the sender's mistake, not ours to keep
                }
            }
        }
        return (tag, fd);
    }
}
