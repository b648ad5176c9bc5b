#!/usr/bin/env python3
"""Extracts the ELF vmlinux from a bzImage: the payload's place and length are in the setup
header (boot protocol 2.08+: payload_offset at 0x248, payload_length at 0x24c); it is
decompressed with lz4 (Debian's cloud kernel) or xz/lzma (the generic kernel)."""
import lzma, struct, subprocess, sys

src, dst = sys.argv[1], sys.argv[2]
image = open(src, "rb").read()
if image[0x202:0x206] != b"HdrS":
    sys.exit(f"{src}: not a bzImage")
setup_sects = image[0x1f1] or 4
offset, length = struct.unpack_from("<II", image, 0x248)
payload = image[(setup_sects + 1) * 512 + offset:][:length]
if payload[:4] == b"\x02\x21\x4c\x18":
    elf = subprocess.run(["lz4", "-dc"], input=payload, capture_output=True).stdout
elif payload[:6] == b"\xfd7zXZ\x00":
    elf = lzma.LZMADecompressor().decompress(payload)
else:
    sys.exit(f"{src}: unknown payload compression {payload[:4].hex()}")
if elf[:4] != b"\x7fELF":
    sys.exit(f"{src}: the payload did not decompress to an ELF file")
open(dst, "wb").write(elf)
