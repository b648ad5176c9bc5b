namespace Vireo.Devices;

/// <summary>
/// Lets a device have the VM's event loop watch a file descriptor (a socket it accepted) while the
/// VM runs. The callback runs on the event loop thread when the fd becomes readable or writable.
/// </summary>
public interface IFdWatcher
{
    void Watch(int fd, Action onReady);
    void Unwatch(int fd);
}
