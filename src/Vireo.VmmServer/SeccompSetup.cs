using System.Runtime.InteropServices;
using Vireo.Sandbox;
using Vireo.Sandbox.Seccomp;
using Vireo.Vmm;

namespace Vireo.VmmServer;

/// <summary>
/// vireo-vmm's seccomp filters (src/Vireo.Sandbox/Seccomp, ThreadFilters says in what order):
/// the SIGSYS handler (native/sigsys.c) first, then the union of the lists on every thread and
/// the vmm list on this one, before the API or a restore reads a byte; the api, vcpu and io lists
/// go on those threads as they start (<see cref="VmmThreads"/>). On unless --no-seccomp, as Firecracker's.
/// </summary>
internal static partial class SeccompSetup
{
    [LibraryImport("vireo_sigsys", EntryPoint = "vireo_sigsys_install")]
    private static partial int InstallHandler();

    [LibraryImport("vireo_sigsys", EntryPoint = "vireo_sigsys_thread_kind")]
    private static partial void MarkThread(nint kind);

    [LibraryImport("vireo_sigsys", EntryPoint = "vireo_sigsys_ioctl_name")]
    private static partial int NameIoctl(nuint request, nint name);

    [LibraryImport("libc", EntryPoint = "getppid")]
    private static partial int GetPpid();

    [LibraryImport("libc", EntryPoint = "ioctl")]
    private static partial int Ioctl(int fd, nuint request, nint arg);

    /// <summary>--seccomp-check's call on a thread of this kind: getppid, or (KIND:ioctl) an ioctl its list does not name.</summary>
    private static void Check(string? check, string kind)
    {
        if (check == kind)
        {
            GetPpid();
        }
        else if (check == kind + ":ioctl")
        {
            Ioctl(-1, kind == "vcpu" ? Vireo.Interop.KvmAbi.KVM_CREATE_VM : Vireo.Interop.KvmAbi.KVM_RUN, 0);
        }
    }

    /// <summary>Installs everything; null, or why the VMM must not go on.</summary>
    /// <param name="check">a thread kind that calls getppid(2), which no list allows, once its filter is on, or KIND:ioctl for an ioctl it does not list (--seccomp-check)</param>
    public static string? Enable(string? check)
    {
        ThreadFilters filters;
        try
        {
            filters = ThreadFilters.Prepare();
        }
        catch (SandboxException e)
        {
            return e.Message;
        }
        if (InstallHandler() != 0)
        {
            return "seccomp: the SIGSYS handler could not be installed";
        }
        foreach (var (name, request) in SeccompNames.Ioctls)
        {
            NameIoctl((nuint)request, Marshal.StringToCoTaskMemUTF8(name)); // kept for the process's life
        }
        var kindNames = SeccompPolicy.Kinds.ToDictionary(k => k, Marshal.StringToCoTaskMemUTF8, StringComparer.Ordinal);
        VmmThreads.OnStart = kind =>
        {
            MarkThread(kindNames[kind]); // first: a call refused right after the load is this kind's
            try
            {
                filters.LoadOnThisThread(kind);
            }
            catch (SandboxException e)
            {
                return e.Message;
            }
            Check(check, kind);
            return null;
        };
        try
        {
            filters.LoadOnAllThreads();
        }
        catch (SandboxException e)
        {
            return e.Message;
        }
        // The API's, the vCPUs' and the event loop's threads are made by this one, which keeps only
        // the union of the lists (it was made after it), not the vmm list.
        var requests = new System.Collections.Concurrent.BlockingCollection<(Thread Thread, TaskCompletionSource Done)>();
        new Thread(() =>
        {
            string? unbuilt = null;
            try
            {
                filters.PrepareThreadLists(); // while the main thread goes on
            }
            catch (SandboxException e)
            {
                unbuilt = e.Message;
            }
            foreach (var (thread, done) in requests.GetConsumingEnumerable())
            {
                try
                {
                    if (unbuilt is not null)
                    {
                        throw new SandboxException(unbuilt);
                    }
                    thread.Start();
                    done.SetResult();
                }
                catch (Exception e)
                {
                    done.SetException(e);
                }
            }
        }) { Name = "vireo-starter", IsBackground = true }.Start();
        VmmThreads.Starter = thread =>
        {
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            requests.Add((thread, done));
            done.Task.GetAwaiter().GetResult();
        };
        try
        {
            filters.LoadMain();
        }
        catch (SandboxException e)
        {
            return e.Message;
        }
        MarkThread(kindNames[SeccompPolicy.Main]);
        Check(check, SeccompPolicy.Main);
        return null;
    }
}
