using System.Text.Json;
using System.Text.Json.Nodes;
using Vireo.Api;
using Vireo.Api.Definitions;
using Vireo.Tests;

namespace Vireo.Api.Tests;

public class DefinitionReaderTests
{
    private const string Good = """
        name: web-1
        kernel: /images/vmlinuz
        vcpus: 2
        memory_mib: 512
        cmdline: "console=ttyS0 root=/dev/vda"
        disks:
          - path: /images/root.ext4
          - path: /images/data.img
            read_only: true
        nets:
          - tap: tap0
            mac: "52:54:00:12:34:56"
        on_crash: preserve
        autostart: yes-this-is-a-string
        """;

    [Fact]
    public void Yaml_and_json_give_the_same_definition()
    {
        var yaml = DefinitionReader.Parse(Good.Replace("autostart: yes-this-is-a-string", "autostart: true"));
        Assert.Empty(yaml.Errors);
        var d = yaml.Definition!;
        Assert.Equal(("web-1", 2, 512L, "preserve", true), (d.Name, d.Vcpus, d.MemoryMib, d.OnCrash, d.Autostart));
        Assert.Equal(["/images/root.ext4", "/images/data.img"], d.Disks!.Select(x => x.Path));
        Assert.True(d.Disks![1].ReadOnly);
        Assert.Equal("52:54:00:12:34:56", d.Nets![0].Mac);
        var json = DefinitionReader.Parse(JsonSerializer.Serialize(d, DaemonJson.Default.VmDefinition));
        Assert.Equal(JsonSerializer.Serialize(d, DaemonJson.Default.VmDefinition), JsonSerializer.Serialize(json.Definition, DaemonJson.Default.VmDefinition));
    }

    [Fact]
    public void Every_error_names_its_field_path_and_yaml_line()
    {
        string bad = Good.Replace("vcpus: 2", "vcpus: 0").Replace("read_only: true", "read_only: 7").Replace("tap: tap0", "tap: \"a tap with spaces\"");
        var r = DefinitionReader.Parse(bad);
        Assert.Null(r.Definition);
        Assert.Equal(
        [
            "line 3: vcpus: 0 is below the minimum 1",
            "line 9: disks[1].read_only: expected a boolean, got the number 7",
            "line 11: nets[0].tap: \"a tap with spaces\" does not match ^[A-Za-z0-9_.-]{1,15}$ (The host TAP device's name.)",
            "line 14: autostart: expected a boolean, got the string \"yes-this-is-a-string\"",
        ], r.Errors.Select(e => e.ToString()));
    }

    [Theory]
    [InlineData("name: [unclosed", "malformed YAML")]
    [InlineData("{\"name\": ", "malformed JSON")]
    [InlineData("", "the document is empty")]
    [InlineData("- a\n- b", "expected an object, got an array")]
    [InlineData("name: a\nname: b\nkernel: k", "line 2: malformed YAML: 'name' appears twice")]
    [InlineData("name: a\nkernel: k\n---\nname: b\nkernel: k", "several YAML documents")]
    [InlineData("name: [!!!]", "malformed YAML: Global tags must be valid URIs")] // found by fuzz/run definition
    public void Malformed_documents_are_refused_with_a_reason(string text, string reason)
    {
        var r = DefinitionReader.Parse(text);
        Assert.Null(r.Definition);
        Assert.Contains(reason, r.ErrorText);
    }

    [Fact]
    public void To_yaml_round_trips()
    {
        var d = DefinitionReader.Parse(Good.Replace("autostart: yes-this-is-a-string", "cmdline2: x").Replace("cmdline2: x", "")).Definition!;
        string yaml = DefinitionReader.ToYaml(d, "made by a test\n\nsecond line");
        Assert.StartsWith("# made by a test\n#\n# second line\n", yaml);
        Assert.Equal(d with { Disks = null, Nets = null }, DefinitionReader.Parse(yaml).Definition! with { Disks = null, Nets = null });
        Assert.Equal(d.Disks, DefinitionReader.Parse(yaml).Definition!.Disks);
    }

    /// <summary>
    /// The hand-written validator against an independent implementation (python3-jsonschema,
    /// Draft 2020-12) on the same schema and the same documents: both must accept or refuse each.
    /// </summary>
    [Fact]
    public void The_validator_agrees_with_python_jsonschema()
    {
        string[] documents =
        [
            """{"name": "a", "kernel": "/k"}""",
            """{"name": "a", "kernel": "/k", "vcpus": 254, "memory_mib": 16}""",
            """{"name": "a", "kernel": "/k", "vcpus": 255}""",
            """{"name": "a", "kernel": "/k", "vcpus": 1.5}""",
            """{"name": "a", "kernel": "/k", "vcpus": 2.0}""",
            """{"name": "a", "kernel": "/k", "memory_mib": 15}""",
            """{"name": "-a", "kernel": "/k"}""",
            """{"name": "a", "kernel": ""}""",
            """{"name": "a"}""",
            """{"name": "a", "kernel": "/k", "extra": 1}""",
            """{"name": "a", "kernel": "/k", "disks": [{"path": "/d"}, {"path": "/e", "read_only": true}]}""",
            """{"name": "a", "kernel": "/k", "disks": [{"read_only": true}]}""",
            """{"name": "a", "kernel": "/k", "disks": [{"path": "/d", "cache": "none"}]}""",
            """{"name": "a", "kernel": "/k", "disks": "/d"}""",
            """{"name": "a", "kernel": "/k", "nets": [{"tap": "tap0", "mac": "52:54:00:00:00:01"}]}""",
            """{"name": "a", "kernel": "/k", "nets": [{"tap": "tap0", "mac": "52:54:00:00:00"}]}""",
            """{"name": "a", "kernel": "/k", "on_reboot": "preserve", "on_crash": "coredump"}""",
            """{"name": "a", "kernel": "/k", "autostart": "true"}""",
            """{"name": "a", "kernel": "/k", "acpi": false, "cmdline": "x"}""",
            """{"name": "a", "kernel": "/k", "vcpus": null}""",
            """[]""",
        ];
        string dir = TempDirectory.Create("schema-check");
        string schema = Path.Combine(dir, "schema.json"), docs = Path.Combine(dir, "docs.json");
        File.WriteAllText(schema, DefinitionReader.SchemaText);
        File.WriteAllText(docs, "[" + string.Join(",", documents) + "]");
        var py = TestEnvironment.Run(File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3", $"-c \"import json,sys,jsonschema; s=json.load(open(sys.argv[1])); jsonschema.Draft202012Validator.check_schema(s); v=jsonschema.Draft202012Validator(s); print(''.join('1' if v.is_valid(d) else '0' for d in json.load(open(sys.argv[2]))))\" {schema} {docs}");
        Assert.True(py.ExitCode == 0, py.Error);
        var validator = new SchemaValidator(JsonNode.Parse(DefinitionReader.SchemaText)!.AsObject());
        string ours = string.Concat(documents.Select(d => validator.Validate(JsonNode.Parse(d)).Count == 0 ? '1' : '0'));
        Assert.Equal(py.Output.Trim(), ours);
        Assert.Contains('0', ours);
        Assert.Contains('1', ours);

        // 2.0 is an integer to JSON Schema, but the definition's vcpus is an int: refused with a reason, not thrown.
        Assert.Contains("vcpus", DefinitionReader.FromNode(JsonNode.Parse(documents[4])).ErrorText);
    }

    [Fact]
    public void A_schema_with_a_keyword_the_validator_does_not_know_is_refused_rather_than_half_checked()
    {
        var e = Assert.Throws<ArgumentException>(() => new SchemaValidator(JsonNode.Parse("""{"type": "object", "properties": {"a": {"oneOf": []}}}""")!.AsObject()));
        Assert.Contains("oneOf", e.Message);
    }

    /// <summary>
    /// Hostile documents that once killed or swelled vireod (a stack overflow inside the YAML parser,
    /// an alias bomb that grew past 12 GB): each is refused with its reason, quickly, in bounded memory.
    /// </summary>
    [Theory]
    [MemberData(nameof(HostileDocuments))]
    public void Hostile_documents_are_refused_while_they_are_parsed(string what, string text, string reason)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        long before = GC.GetAllocatedBytesForCurrentThread();
        var r = DefinitionReader.Parse(text);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Null(r.Definition);
        Assert.True(r.ErrorText.Contains(reason, StringComparison.Ordinal), $"{what}: {r.ErrorText}");
        Assert.True(allocated < 64L * text.Length + (16 << 20), $"{what}: {allocated} bytes allocated for {text.Length} characters");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"{what}: {clock.Elapsed}");
    }

    public static TheoryData<string, string, string> HostileDocuments()
    {
        const int deep = 200_000;
        var bomb = new System.Text.StringBuilder("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (char c = 'b'; c <= 'j'; c++)
        {
            bomb.Append(c).Append(": &").Append(c).Append(" [").Append(string.Join(",", Enumerable.Repeat($"*{(char)(c - 1)}", 9))).Append("]\n");
        }
        return new()
        {
            { "flow sequences nested 200,000 deep", new string('[', deep) + new string(']', deep), "nested more than 16 levels deep" },
            { "flow mappings nested 200,000 deep", "a: " + string.Concat(Enumerable.Repeat("{a: ", deep)) + "1" + new string('}', deep), "nested more than 16 levels deep" },
            { "block sequences nested 1,000 deep", string.Concat(Enumerable.Range(0, 1000).Select(i => new string(' ', i) + "-\n")), "nested more than 16 levels deep" },
            { "JSON nested 100,000 deep", string.Concat(Enumerable.Repeat("{\"a\":", deep / 2)) + "1" + new string('}', deep / 2), "nested more than 16 levels deep" },
            { "JSON arrays 200,000 deep in a YAML flow", "name: " + new string('[', deep) + new string(']', deep), "nested more than 16 levels deep" },
            { "a billion laughs", bomb.ToString(), "aliases (*a) are not allowed" },
            { "one alias", "name: &n web\nkernel: *n\n", "aliases (*n) are not allowed" },
            { "a merge key", "base: &b {vcpus: 2}\nname: web\nkernel: /k\n<<: *b\n", "aliases (*b) are not allowed" },
            { "a 2 MiB document", "name: web\nkernel: /k\ncmdline: " + new string('x', 2 << 20), "at most 1048576 are allowed" },
            { "a complex key", "? [a, b]\n: 1\n", "keys must be plain strings" },
        };
    }

    [Theory]
    [InlineData("web\n")]
    [InlineData("web\r\n")]
    [InlineData("\nweb")]
    [InlineData("we\nb")]
    public void A_name_with_a_newline_anywhere_is_refused(string name)
    {
        Assert.NotNull(DefinitionReader.CheckName(name));
        var r = DefinitionReader.Parse(JsonSerializer.Serialize(new { name, kernel = "/k" }));
        Assert.Null(r.Definition);
        Assert.Contains("name:", r.ErrorText);
        Assert.Null(DefinitionReader.CheckName("web"));
    }

    [Theory]
    [InlineData("{\"name\": \"a\", \"kernel\": \"/k\",}", "malformed JSON", "line 1")]
    [InlineData("{\"name\": \"a\",\n \"kernel\" \"/k\"}", "malformed JSON", "line 2")]
    public void Malformed_json_names_its_place_in_the_text_not_the_parser(string text, string reason, string where)
    {
        var r = DefinitionReader.Parse(text);
        Assert.Null(r.Definition);
        Assert.Contains(reason, r.ErrorText);
        Assert.Contains(where, r.ErrorText);
        Assert.DoesNotContain("LineNumber", r.ErrorText);
        Assert.DoesNotContain("BytePositionInLine", r.ErrorText);
    }

    /// <summary>
    /// Structured fuzzing: every prefix of a good definition in both syntaxes, and thousands of
    /// documents mutated byte by byte (deleted, doubled, swapped for YAML's and JSON's own punctuation),
    /// each parsed to a definition or refused with a reason, never an exception.
    /// </summary>
    [Fact]
    public void Mutated_definitions_are_read_or_refused_never_thrown()
    {
        string json = JsonSerializer.Serialize(DefinitionReader.Parse(Good.Replace("autostart: yes-this-is-a-string", "autostart: true")).Definition, DaemonJson.Default.VmDefinition);
        string[] seeds = [Good, json, "name: a\nkernel: /k\ndisks: [{path: /d, read_only: true}]\nnets:\n  - {tap: t0}\n"];
        string punctuation = "[]{}:,-&*!|>'\"#%@`?\n\t \\0";
        var rng = new Random(12);
        int refused = 0, read = 0;
        foreach (string seed in seeds)
        {
            for (int cut = 0; cut <= seed.Length; cut++)
            {
                Count(DefinitionReader.Parse(seed[..cut]));
            }
            for (int i = 0; i < 3000; i++)
            {
                var text = new System.Text.StringBuilder(seed);
                for (int m = rng.Next(1, 4); m > 0 && text.Length > 0; m--)
                {
                    int at = rng.Next(text.Length);
                    switch (rng.Next(4))
                    {
                        case 0: text.Remove(at, 1); break;
                        case 1: text.Insert(at, text[at]); break;
                        case 2: text[at] = punctuation[rng.Next(punctuation.Length)]; break;
                        default: text.Insert(at, new string(punctuation[rng.Next(punctuation.Length)], rng.Next(1, 40))); break;
                    }
                }
                Count(DefinitionReader.Parse(text.ToString()));
            }
        }
        Assert.True(refused > 1000 && read > 100, $"{refused} refused, {read} read");

        void Count(DefinitionResult r)
        {
            Assert.True((r.Definition is null) != (r.Errors.Count == 0), r.ErrorText);
            Assert.All(r.Errors, e => Assert.False(string.IsNullOrWhiteSpace(e.Message)));
            if (r.Definition is null)
            {
                refused++;
            }
            else
            {
                read++;
            }
        }
    }

    /// <summary>A small hostile document must not get a huge answer: errors stop at a limit, and a list too long is not checked item by item.</summary>
    [Fact]
    public void Errors_are_bounded_whatever_the_document_holds()
    {
        string keys = "name: a\nkernel: /k\n" + string.Concat(Enumerable.Range(0, 90_000).Select(i => $"k{i}: 1\n"));
        var many = DefinitionReader.Parse(keys);
        Assert.Equal(SchemaValidator.MaxErrors + 1, many.Errors.Count);
        Assert.Contains("only the first 20 are listed", many.ErrorText);
        Assert.True(many.ErrorText.Length < 20_000, $"{many.ErrorText.Length} characters of errors");

        var list = DefinitionReader.Parse("name: a\nkernel: /k\ndisks: [" + string.Join(",", Enumerable.Repeat("1", 300_000)) + "]\n");
        Assert.Equal("line 3: disks: 300000 items; at most 16 are allowed", Assert.Single(list.Errors).ToString());
    }

    [Theory]
    [InlineData("{\"name\": \"a\", \"kernel\": \"/k\", \"name\": \"b\"}", "'name' appears twice")]
    [InlineData("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 64.0}", "memory_mib: a whole number must be written without a fraction or an exponent (64, not 64.0)")]
    [InlineData("{\"name\": \"a\", \"kernel\": \"/k\", \"vcpus\": 1e0}", "vcpus: a whole number must be written without a fraction or an exponent")]
    [InlineData("name: a\nkernel: /k\nmemory_mib: 1e309\n", "line 3: memory_mib: expected an integer, got the string \"1e309\"")]
    [InlineData("name: a\nkernel: /k\nvcpus: -1e309\n", "line 3: vcpus: expected an integer, got the string \"-1e309\"")]
    public void Numbers_and_keys_json_cannot_hold_are_refused_by_field(string text, string reason)
    {
        var r = DefinitionReader.Parse(text);
        Assert.Null(r.Definition);
        Assert.Contains(reason, r.ErrorText);
        Assert.DoesNotContain("System.", r.ErrorText);
        Assert.DoesNotContain("Vireo.", r.ErrorText);
        Assert.Equal("1e309", DefinitionReader.Parse("name: 1e309\nkernel: /k\n").Definition!.Name); // text where it fits
    }
}
