using System.Text.Json;

namespace Vireo.VmmServer.Tests;

/// <summary>
/// A table of bad bodies for every PUT endpoint: each is a 400 whose fault_message names what is
/// wrong in the API's words, in one line, and no response names a .NET type or namespace.
/// </summary>
public class BadBodyTests(SharedVmm process) : IClassFixture<SharedVmm>
{
    private static string Fault(string body) => VmmProcess.Fault(body);

    public static TheoryData<string, string, string> BadBodies()
    {
        var data = new TheoryData<string, string, string>();
        var endpoints = new (string Path, string What, string Valid)[]
        {
            ("boot-source", "boot-source", """{"kernel_image_path": "/k"}"""),
            ("machine-config", "machine-config", """{"vcpu_count": 1, "mem_size_mib": 64}"""),
            ("drives/root", "drive", """{"drive_id": "root", "path_on_host": "/d"}"""),
            ("network-interfaces/eth0", "network-interface", """{"iface_id": "eth0", "host_dev_name": "tap0"}"""),
            ("vsock", "vsock", """{"guest_cid": 3, "uds_path": "/v.sock"}"""),
            ("actions", "actions", """{"action_type": "Pause"}"""),
        };
        foreach (var (path, what, valid) in endpoints)
        {
            data.Add(path, "", "body: empty; a JSON object is expected");
            data.Add(path, "null", "body: a JSON object is expected, got null");
            data.Add(path, "[1, 2]", "body: a JSON object is expected, got an array");
            data.Add(path, "\"text\"", "body: a JSON object is expected, got \"text\"");
            data.Add(path, "{}", $"{what}: ");
            data.Add(path, valid[..^1], "body: malformed JSON at byte ");
            data.Add(path, valid.Replace("{", "{\"surprise\": 1, "), $"{what}: unknown field 'surprise' (known: ");
            data.Add(path, valid.Replace("{", "{'single': 1, "), "body: malformed JSON at byte 1");
            data.Add(path, valid + "x", "body: malformed JSON at byte ");
            // Every field in turn given a value of the wrong kind.
            using var doc = JsonDocument.Parse(valid);
            foreach (var field in doc.RootElement.EnumerateObject())
            {
                string wrong = field.Value.ValueKind == JsonValueKind.String ? "42" : "\"two\"";
                string body = valid.Replace($"\"{field.Name}\": {field.Value.GetRawText()}", $"\"{field.Name}\": {wrong}");
                data.Add(path, body, $"{what}: {field.Name} must be ");
                data.Add(path, valid.Replace($"\"{field.Name}\": {field.Value.GetRawText()}", $"\"{field.Name}\": {{}}"), $"{what}: {field.Name} must be ");
                data.Add(path, valid.Replace($"\"{field.Name}\": {field.Value.GetRawText()}", $"\"{field.Name}\": null"), $"{what}: {field.Name} must be ");
                string without = valid.Replace($"\"{field.Name}\": {field.Value.GetRawText()}", "").Replace("{, ", "{").Replace(", }", "}");
                data.Add(path, without, $"{what}: {field.Name} is required");
            }
        }
        data.Add("machine-config", """{"vcpu_count": "two", "mem_size_mib": 64}""", "machine-config: vcpu_count must be a whole number, got \"two\"");
        data.Add("machine-config", """{"vcpu_count": 1.5, "mem_size_mib": 64}""", "machine-config: vcpu_count must be a whole number, got 1.5");
        data.Add("machine-config", """{"vcpu_count": 99999999999, "mem_size_mib": 64}""", "machine-config: vcpu_count must be a whole number, got 99999999999");
        data.Add("machine-config", """{"vcpu_count": 2}""", "machine-config: mem_size_mib is required");
        data.Add("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64, "acpi": "yes"}""", "machine-config: acpi must be true or false, got \"yes\"");
        data.Add("machine-config", """{"vcpu_count": 1, "vcpu_count": 2, "mem_size_mib": 64}""", "machine-config: vcpu_count is given twice");
        data.Add("vsock", """{"guest_cid": -3, "uds_path": "/v.sock"}""", "vsock: guest_cid must be a whole number, 0 or more, got -3");
        data.Add("machine-config", """{"vcpu_count": 2, "mem_size_mib": 6""", "body: malformed JSON at byte 35");
        return data;
    }

    [Theory]
    [InlineData("machine-config", "{\"vcpu_count\":1,\"mem_size_mib\":64,\"\xff\":1}")]
    [InlineData("machine-config", "{\"vcpu_count\":1,\"mem_size_mib\":64,\"acpi\":\"\xff\"}")]
    [InlineData("boot-source", "{\"kernel_image_path\": \"/k\xc3\"}")]
    [InlineData("boot-source", "{\"kernel_image_path\": \"/k\x80\"}")]
    [InlineData("drives/root", "{\"drive_id\": \"root\", \"path_on_host\": \"/d\xed\xa0\x80\"}")]
    public async Task Invalid_utf8_is_a_400_naming_its_byte(string path, string latin1)
    {
        // Each char stands for one byte (Latin-1), so the bodies hold bytes that are not UTF-8.
        byte[] body = System.Text.Encoding.Latin1.GetBytes(latin1);
        int at = Array.FindIndex(body, b => b >= 0x80);
        using var r = await process.Vmm.Http.PutAsync(path, new ByteArrayContent(body));
        string text = await r.Content.ReadAsStringAsync();
        Assert.True((int)r.StatusCode == 400, $"PUT /{path}: {(int)r.StatusCode} {text}");
        Assert.Equal($"body: invalid UTF-8 at byte {at}", Fault(text));
    }

    [Theory]
    [MemberData(nameof(BadBodies))]
    public async Task Every_bad_body_is_a_400_in_the_apis_words(string path, string body, string message)
    {
        var vmm = process.Vmm;
        var (status, text) = await vmm.Put(path, body);
        Assert.True(status == 400, $"PUT /{path} {body}: {status} {text}");
        string fault = Fault(text);
        Assert.StartsWith(message, fault);
        Assert.DoesNotContain('\n', fault);
        foreach (var dotnet in new[] { "Vireo.", "System.", "type '", "Path: $", "LineNumber" })
        {
            Assert.DoesNotContain(dotnet, text);
        }
    }

    [Theory]
    [InlineData("machine-config")]
    [InlineData("boot-source")]
    [InlineData("snapshot/load")]
    public async Task A_body_over_64_kib_is_a_413_by_its_length_or_while_read(string path)
    {
        var vmm = process.Vmm;
        var (status, text) = await vmm.Put(path, new string(' ', 70_000) + "{}");
        Assert.True(status == 413, $"PUT /{path} 70 KB: {status} {text}");
        Assert.Equal("body: larger than 65536 bytes", Fault(text));
        // No length given (chunked): refused once more than the limit has come.
        var chunked = new StreamContent(new MemoryStream(new byte[70_000]));
        using var r = await vmm.Http.PutAsync(path, chunked);
        Assert.Equal(413, (int)r.StatusCode);
        Assert.Equal("body: larger than 65536 bytes", Fault(await r.Content.ReadAsStringAsync()));
    }
}
