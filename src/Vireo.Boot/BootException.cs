namespace Vireo.Boot;

/// <summary>A kernel, initrd or command line that cannot be booted; the message is one line naming the problem.</summary>
public sealed class BootException(string message) : Exception(message);
