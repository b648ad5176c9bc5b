using Vireo.Api;

namespace Vireo.Cli.Import;

/// <summary>
/// An xl.cfg domain configuration turned into a Vireo VM definition: the common keys (name,
/// memory, maxmem, vcpus, kernel, ramdisk, cmdline/extra/root, disk, vif, on_*, acpi), with a
/// note for every key or value that cannot be honoured as written.
/// </summary>
internal static partial class XlImport
{
    public sealed record Result(VmDefinition? Definition, List<string> Notes, string? Error);

    public static Result Convert(string text, string baseDir)
    {
        List<XlConfig.Setting> settings;
        try
        {
            settings = XlConfig.Parse(text);
        }
        catch (FormatException e)
        {
            return new(null, [], e.Message);
        }
        var notes = new List<string>();
        var byKey = settings.ToDictionary(s => s.Key);
        string? Str(string key)
        {
            if (!byKey.TryGetValue(key, out var s))
            {
                return null;
            }
            if (s.Value is string v)
            {
                return v;
            }
            notes.Add($"line {s.Line}: {key}: expected a string; ignored");
            return null;
        }
        long? Num(string key)
        {
            if (!byKey.TryGetValue(key, out var s))
            {
                return null;
            }
            if (s.Value is long v)
            {
                return v;
            }
            if (s.Value is string t && long.TryParse(t, out long parsed))
            {
                return parsed;
            }
            notes.Add($"line {s.Line}: {key}: expected a number; ignored");
            return null;
        }
        string Abs(string path) => Path.IsPathFullyQualified(path) ? path : Path.GetFullPath(Path.Combine(baseDir, path));

        string? name = Str("name");
        string? kernel = Str("kernel");
        if (name is null)
        {
            return new(null, notes, "name: required, and not set");
        }
        if (kernel is null)
        {
            return new(null, notes, "kernel: not set: Vireo boots a kernel directly (no firmware, no bootloader such as pygrub)");
        }
        long memory = Num("memory") ?? 256;
        if (Num("maxmem") is long maxmem && maxmem != memory)
        {
            notes.Add($"maxmem: {maxmem} MiB cannot be honoured: no ballooning yet, so the guest gets memory = {memory} MiB");
        }
        int vcpus = (int)(Num("vcpus") ?? 1);
        if (Num("maxvcpus") is long maxvcpus && maxvcpus != vcpus)
        {
            notes.Add($"maxvcpus: {maxvcpus} cannot be honoured: no vCPU hot-plug, so the guest gets vcpus = {vcpus}");
        }
        string? cmdline = RenameXenDisks(Str("cmdline"), "cmdline", notes);
        string? root = RenameXenDisks(Str("root"), "root", notes), extra = RenameXenDisks(Str("extra"), "extra", notes);
        if (cmdline is not null && (root is not null || extra is not null))
        {
            notes.Add("root/extra: ignored because cmdline is set (as xl does)");
        }
        cmdline ??= root is null && extra is null ? null : string.Join(' ', new[] { root is null ? null : $"root={root}", extra }.Where(x => x is not null));

        var disks = new List<DiskDefinition>();
        foreach (var (spec, i) in List("disk", byKey, notes).Select((s, i) => (s, i)))
        {
            if (Disk(spec, notes, $"disk[{i}]") is { } d)
            {
                disks.Add(d with { Path = Abs(d.Path) });
            }
        }
        var nets = new List<NetDefinition>();
        foreach (var (spec, i) in List("vif", byKey, notes).Select((s, i) => (s, i)))
        {
            nets.Add(Vif(spec, name, i, notes));
        }
        string Policy(string key, string fallback)
        {
            string? v = Str(key);
            switch (v)
            {
                case null:
                    return fallback;
                case LifecyclePolicy.Destroy or LifecyclePolicy.Restart or LifecyclePolicy.Preserve:
                    return v;
                case "rename-restart" or "coredump-restart" or "soft-reset":
                    notes.Add($"{key}: '{v}' is not supported; 'restart' is used");
                    return LifecyclePolicy.Restart;
                case "coredump-destroy":
                    notes.Add($"{key}: '{v}': no core dump is taken; 'destroy' is used");
                    return LifecyclePolicy.Destroy;
                default:
                    notes.Add($"{key}: '{v}' is not an xl action; '{fallback}' is used");
                    return fallback;
            }
        }
        string? type = Str("type") ?? Str("builder");
        if (type is "hvm")
        {
            notes.Add("type: 'hvm': Vireo has no firmware; the kernel is booted directly (bzImage or PVH ELF)");
        }
        else if (type is "pv")
        {
            notes.Add("type: 'pv': Xen PV guests are booted as a Linux bzImage or PVH kernel on KVM; a kernel built only for Xen PV will not boot");
        }
        var understood = new HashSet<string> { "name", "memory", "maxmem", "vcpus", "maxvcpus", "kernel", "ramdisk", "cmdline", "root", "extra",
            "disk", "vif", "on_poweroff", "on_reboot", "on_crash", "acpi", "type", "builder" };
        foreach (var s in settings.Where(s => !understood.Contains(s.Key)))
        {
            notes.Add($"line {s.Line}: {s.Key}: not supported by Vireo; ignored");
        }
        var definition = new VmDefinition(name, Abs(kernel), vcpus, memory,
            Str("ramdisk") is { } ramdisk ? Abs(ramdisk) : null, cmdline,
            disks.Count > 0 ? [.. disks] : null, nets.Count > 0 ? [.. nets] : null,
            Acpi: Num("acpi") is not 0,
            OnPoweroff: Policy("on_poweroff", LifecyclePolicy.Destroy),
            OnReboot: Policy("on_reboot", LifecyclePolicy.Restart),
            OnCrash: Policy("on_crash", LifecyclePolicy.Destroy));
        return new(definition, notes, null);
    }

    private static List<string> List(string key, Dictionary<string, XlConfig.Setting> byKey, List<string> notes)
    {
        if (!byKey.TryGetValue(key, out var s))
        {
            return [];
        }
        if (s.Value is List<object> items && items.All(i => i is string))
        {
            return [.. items.Cast<string>()];
        }
        notes.Add($"line {s.Line}: {key}: expected a list of strings; ignored");
        return [];
    }

    /// <summary>xl-disk-configuration(5): key=value pairs, or positional target,format,vdev,access (target last when keyed).</summary>
    private static DiskDefinition? Disk(string spec, List<string> notes, string where)
    {
        string? target = null, format = null, access = null, devtype = null;
        int next = 0;
        foreach (var raw in spec.Split(',', StringSplitOptions.TrimEntries))
        {
            int eq = raw.IndexOf('=');
            string key = eq > 0 ? raw[..eq] : Positional(raw, next++);
            string value = eq > 0 ? raw[(eq + 1)..] : raw;
            if (key == "vdev" && value.EndsWith(":cdrom", StringComparison.Ordinal))
            {
                devtype = "cdrom"; // the legacy 'hdc:cdrom' form
            }
            switch (key)
            {
                case "target": target = value; break;
                case "format": format = value; break;
                case "access": access = value; break;
                case "devtype": devtype = value; break;
                case "vdev" or "backendtype" or "script" or "direct-io-safe" or "discard" or "no-discard": break;
                case "cdrom" when eq < 0: devtype = "cdrom"; break;
                default: notes.Add($"{where}: '{raw}' is not understood; ignored"); break;
            }
        }
        if (target is null or "")
        {
            notes.Add(devtype == "cdrom" ? $"{where}: an empty CD-ROM drive: Vireo has no CD-ROM device; skipped" : $"{where}: '{spec}' names no target; skipped");
            return null;
        }
        foreach (var prefix in new[] { "phy:", "file:", "tap:aio:", "tap:qcow2:", "aio:" })
        {
            if (target.StartsWith(prefix, StringComparison.Ordinal))
            {
                if (prefix == "tap:qcow2:")
                {
                    format = "qcow2";
                }
                target = target[prefix.Length..];
            }
        }
        if (devtype == "cdrom")
        {
            notes.Add($"{where}: CD-ROM {target}: Vireo has no CD-ROM device (attach an image as a read-only disk instead); skipped");
            return null;
        }
        if (format is not (null or "raw"))
        {
            notes.Add($"{where}: {target}: format '{format}' is not supported (raw images only: qemu-img convert -O raw); skipped");
            return null;
        }
        return new DiskDefinition(target, access is "r" or "ro");
    }

    /// <summary>
    /// A positional disk parameter: the first is the target; after it xl tells format, vdev and access
    /// apart by their values, so the legacy three-part form 'phy:/dev/vg/x,xvda,w' and 'file:/a.iso,hdc:cdrom,r' read right.
    /// </summary>
    private static string Positional(string value, int index) => index == 0 ? "target" : value switch
    {
        "raw" or "qcow" or "qcow2" or "vhd" or "qed" or "empty" => "format",
        "r" or "ro" or "w" or "rw" => "access",
        "" => "",
        _ => "vdev",
    };

    /// <summary>
    /// Xen's disk names become virtio's: the guest sees its first disk as /dev/vda, not /dev/xvda, so
    /// root=/dev/xvda1 is rewritten to root=/dev/vda1 and the change is reported.
    /// </summary>
    private static string? RenameXenDisks(string? text, string key, List<string> notes)
    {
        if (text is null || !XenDisk().IsMatch(text))
        {
            return text;
        }
        string renamed = XenDisk().Replace(text, "/dev/vd$1");
        notes.Add($"{key}: '{text}' names Xen's disks (xvd*); under Vireo they are virtio disks (vd*), so it becomes '{renamed}'");
        return renamed;
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"/dev/xvd([a-z]+[0-9]*)")]
    private static partial System.Text.RegularExpressions.Regex XenDisk();

    /// <summary>xl-network-configuration(5): mac, bridge, vifname, ...; Vireo attaches to an existing TAP device.</summary>
    private static NetDefinition Vif(string spec, string vm, int index, List<string> notes)
    {
        string? mac = null, tap = null;
        foreach (var raw in spec.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = raw.IndexOf('=');
            string key = eq > 0 ? raw[..eq] : raw, value = eq > 0 ? raw[(eq + 1)..] : "";
            switch (key)
            {
                case "mac": mac = value; break;
                case "vifname": tap = value; break;
                case "bridge": notes.Add($"vif[{index}]: bridge={value}: Vireo uses the TAP device as it is; add it to {value} on the host yourself"); break;
                case "type" or "model" when value is "vif" or "netfront" or "ioemu" or "virtio-net" or "e1000": break;
                default: notes.Add($"vif[{index}]: '{raw}' is not supported; ignored"); break;
            }
        }
        if (tap is null)
        {
            tap = $"vif-{vm}".Length <= 13 ? $"vif-{vm}.{index}" : $"vireo{index}";
            notes.Add($"vif[{index}]: no vifname: TAP device '{tap}' is assumed (create it, or set nets[{index}].tap)");
        }
        return new NetDefinition(tap, mac);
    }
}
