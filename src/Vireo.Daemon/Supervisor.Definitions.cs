using Vireo.Api;

namespace Vireo.Daemon;

/// <summary>Define, undefine and rename: each under the VM's lock, so none runs during a start of that VM.</summary>
internal sealed partial class Supervisor
{
    /// <summary>
    /// Defines a VM; false when the name is taken. A directory left under its name (by a vireod
    /// that did not remove it at undefine) is removed, so the new VM shows none of an old one's output.
    /// </summary>
    public bool Define(VmDefinition def, string tenant)
    {
        lock (LockFor(def.Name))
        {
            if (!_store.Define(def, tenant))
            {
                return false;
            }
            if (Directory.Exists(VmDir(def.Name)))
            {
                Directory.Delete(VmDir(def.Name), recursive: true);
            }
            return true;
        }
    }

    /// <summary>Renames a VM that is not running (as virsh domrename): its definition, its row and its directory.</summary>
    public string? Rename(string name, string newName)
    {
        // Both names' locks, in one order (no deadlock with a rename the other way): nothing starts, defines or undefines either meanwhile.
        var (first, second) = string.CompareOrdinal(name, newName) < 0 ? (name, newName) : (newName, name);
        lock (LockFor(first))
        lock (LockFor(second))
        {
            if (_running.ContainsKey(name) || _incoming.ContainsKey(name))
            {
                return $"'{name}' is {(_incoming.ContainsKey(name) ? "arriving from another vireod" : "running")}: only a VM that is not running can be renamed";
            }
            if (_store.Get(newName) is not null)
            {
                return $"new_name: a VM named '{newName}' is already defined";
            }
            if (!_store.Rename(name, newName))
            {
                return _store.Get(name) is null ? $"no VM named '{name}'" : $"new_name: a VM named '{newName}' is already defined";
            }
            if (Directory.Exists(VmDir(newName)))
            {
                Directory.Delete(VmDir(newName), recursive: true); // left by a VM of that name undefined before undefine removed it
            }
            if (Directory.Exists(VmDir(name)))
            {
                Directory.CreateDirectory(Path.GetDirectoryName(VmDir(newName))!);
                Directory.Move(VmDir(name), VmDir(newName));
            }
            _events.Publish(newName, "renamed", _store.Get(newName)!.State, $"was '{name}'");
            return null;
        }
    }

    /// <summary>
    /// Undefines a VM that is not running, and removes its directory (console log, VMM log), so a
    /// new VM of the same name starts clean. Under the VM's lock: a start in progress finishes
    /// first, and then the VM is running (409), never half-undefined. Null when done, else (status, why).
    /// </summary>
    public (int Status, string Why)? Undefine(string name)
    {
        lock (LockFor(name))
        {
            if (_running.ContainsKey(name))
            {
                return (409, $"'{name}' is running: destroy it first");
            }
            if (_incoming.ContainsKey(name))
            {
                return (409, $"'{name}' is arriving from another vireod (vireo migrate): wait until it runs, or stop the migration on the source");
            }
            if (!_store.Undefine(name))
            {
                return (404, $"no VM named '{name}'");
            }
            _committed.TryRemove(name, out _);
            if (Directory.Exists(VmDir(name)))
            {
                Directory.Delete(VmDir(name), recursive: true);
            }
            return null;
        }
    }
}
