using Vireo.Api;
using Vireo.Api.Definitions;

namespace Vireo.Daemon;

/// <summary>
/// Kernel, initrd and disk paths must lie inside the image directories vireod was given, and
/// exist: a client of the API cannot make a VMM open an arbitrary host file.
/// </summary>
internal static class ImagePolicy
{
    public static SchemaError? Check(VmDefinition d, List<string> imageDirs)
    {
        var paths = new List<(string Field, string Path)> { ("kernel", d.Kernel) };
        if (d.Initrd is not null)
        {
            paths.Add(("initrd", d.Initrd));
        }
        var disks = d.Disks ?? [];
        for (int i = 0; i < disks.Length; i++)
        {
            paths.Add(($"disks[{i}].path", disks[i].Path));
        }
        foreach (var (field, path) in paths)
        {
            if (!Path.IsPathFullyQualified(path))
            {
                return new SchemaError(field, $"{path} is not an absolute path");
            }
            // Resolve symbolic links too: a link inside an image directory must not lead outside it.
            string full = Path.GetFullPath(path);
            string real = File.Exists(full) ? new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full : full;
            if (!imageDirs.Any(dir => full.StartsWith(dir, StringComparison.Ordinal) && real.StartsWith(dir, StringComparison.Ordinal)))
            {
                return new SchemaError(field, $"{path} is outside the image directories ({string.Join(", ", imageDirs)})");
            }
            if (!File.Exists(full))
            {
                return new SchemaError(field, $"no such file: {path}");
            }
        }
        return null;
    }
}
