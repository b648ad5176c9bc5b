namespace Vireo.Boot;

/// <summary>A kernel, initrd or command line that cannot be booted; the message is one line naming the problem.</summary>
public class BootException(string message) : Exception(message);

/// <summary>
/// A command line longer than the kernel accepts: the image is fine, the configuration is not
/// (`vireo run` answers it as a bad --cmdline, exit 2, not as a malformed image).
/// </summary>
public sealed class CmdlineTooLongException(string message) : BootException(message);
