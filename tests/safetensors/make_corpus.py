#!/usr/bin/env python3
"""Writes the malformed-safetensors corpus into corpus/ (committed; also the
seed corpus of the libFuzzer target). corpus_test.cc holds the expected error
of every file: add a row there when adding a file here.

  python3 tests/safetensors/make_corpus.py
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def le64(n):
    return struct.pack("<Q", n)


def st(header, data=b"", n=None, pad=True):
    """A file with header text `header` (str or bytes), data section `data`;
    `n` overrides the length prefix."""
    h = header.encode() if isinstance(header, str) else header
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return le64(len(h) if n is None else n) + h + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def hdr(d):
    return json.dumps(d, separators=(",", ":"))


VALID = hdr({
    "__metadata__": {"format": "pt"},
    "a": entry("F32", [2, 2], 0, 16),
    "b": entry("BF16", [3], 16, 22),
})
VALID_DATA = bytes(range(22))

FILES = {
    # Valid files: seeds for the fuzzer, and must parse.
    "valid_two_tensors.safetensors": st(VALID, VALID_DATA),
    "valid_scalar_empty_metadata.safetensors": st(hdr({
        "__metadata__": {},
        "scalar": entry("F64", [], 0, 8),
        "empty": entry("U8", [0, 7], 8, 8),
        "flag": entry("BOOL", [1], 8, 9),
    }), bytes(9)),
    "valid_no_tensors.safetensors": st("{}"),
    "valid_all_dtypes.safetensors": st(hdr({
        name: entry(name, [1], off, off + size)
        for name, size, off in [
            ("F64", 8, 0), ("I64", 8, 8), ("U64", 8, 16), ("F32", 4, 24), ("I32", 4, 28),
            ("U32", 4, 32), ("F16", 2, 36), ("BF16", 2, 38), ("I16", 2, 40), ("U16", 2, 42),
            ("F8_E4M3", 1, 44), ("F8_E5M2", 1, 45), ("I8", 1, 46), ("U8", 1, 47), ("BOOL", 1, 48)]
    }), bytes(49)),

    # Truncation and the length prefix.
    "truncated_data.safetensors": st(VALID, VALID_DATA)[:-4],
    "truncated_prefix.safetensors": le64(40)[:5],
    "empty_file.safetensors": b"",
    "header_length_past_eof.safetensors": st(VALID, VALID_DATA, n=1000),
    "header_length_zero.safetensors": le64(0) + VALID.encode(),
    "header_length_huge.safetensors": st(VALID, VALID_DATA, n=1 << 40),
    "header_length_u64_max.safetensors": st(VALID, VALID_DATA, n=(1 << 64) - 1),
    "header_length_cap_plus_one.safetensors": st(VALID, VALID_DATA, n=100_000_001),

    # Header text.
    "non_utf8_json.safetensors": st(b'{"\xff\xfe": ' + json.dumps(entry("U8", [1], 0, 1)).encode() + b"}", b"\0"),
    "overlong_utf8_json.safetensors": st(b'{"\xc0\xaf": ' + json.dumps(entry("U8", [1], 0, 1)).encode() + b"}", b"\0"),
    "json_not_object.safetensors": st("[1, 2, 3]"),
    "json_leading_space.safetensors": st(" " + hdr({"a": entry("U8", [1], 0, 1)}), b"\0"),
    "json_syntax_error.safetensors": st('{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]'),
    "json_trailing_garbage.safetensors": st(hdr({"a": entry("U8", [1], 0, 1)}) + "}", b"\0"),
    "json_nul_padding.safetensors": st(hdr({"a": entry("U8", [1], 0, 1)}).encode() + b"\0" * 5, b"\0", pad=False),
    "json_nul_then_garbage.safetensors": st(hdr({"a": entry("U8", [1], 0, 1)}).encode() + b'\0", "b": 7}', b"\0"),
    "metadata_not_string.safetensors": st('{"__metadata__": {"step": 1}}'),
    "metadata_not_object.safetensors": st('{"__metadata__": "pt"}'),
    "tensor_not_object.safetensors": st('{"a": 5}'),
    "missing_data_offsets.safetensors": st('{"a": {"dtype": "U8", "shape": [1]}}', b"\0"),
    "missing_dtype.safetensors": st('{"a": {"shape": [1], "data_offsets": [0, 1]}}', b"\0"),
    "duplicate_tensor_name.safetensors": st(
        '{"a": ' + json.dumps(entry("U8", [1], 0, 1)) + ', "a": ' + json.dumps(entry("U8", [1], 1, 2)) + "}",
        b"\0\0"),
    "duplicate_field.safetensors": st('{"a": {"dtype": "U8", "dtype": "I8", "shape": [1], "data_offsets": [0, 1]}}', b"\0"),
    "deep_nesting_in_unknown_key.safetensors": st('{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": ' + "[" * 5000 + "]" * 5000 + "}, \"b\": 1}", b"\0"),

    # Tensor entries.
    "unknown_dtype.safetensors": st(hdr({"a": entry("C64", [1], 0, 8)}), bytes(8)),
    "dtype_not_string.safetensors": st('{"a": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}}', bytes(4)),
    "negative_shape.safetensors": st(hdr({"a": entry("U8", [2, -3], 0, 6)}), bytes(6)),
    "shape_float.safetensors": st('{"a": {"dtype": "U8", "shape": [2.0], "data_offsets": [0, 2]}}', bytes(2)),
    "shape_not_array.safetensors": st('{"a": {"dtype": "U8", "shape": 2, "data_offsets": [0, 2]}}', bytes(2)),
    "dim_exceeds_int64.safetensors": st(hdr({"a": entry("U8", [1 << 63], 0, 1 << 63)}), b""),
    "shape_element_overflow.safetensors": st(hdr({"a": entry("F32", [1 << 32, 1 << 32, 4], 0, 16)}), bytes(16)),
    "shape_bytes_overflow.safetensors": st(hdr({"a": entry("F64", [1 << 61], 0, 8)}), bytes(8)),
    "shape_dtype_mismatch.safetensors": st(hdr({"a": entry("F32", [2, 3], 0, 20)}), bytes(20)),
    "begin_greater_than_end.safetensors": st(hdr({"a": entry("U8", [0], 8, 4)}), bytes(8)),
    "offsets_three_values.safetensors": st('{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}', b"\0"),
    "offsets_overflow.safetensors": st(
        '{"a": {"dtype": "U8", "shape": [8], "data_offsets": [18446744073709551608, 18446744073709551616]}}', bytes(8)),
    "offsets_near_u64_max.safetensors": st(hdr({
        "a": entry("U8", [8], 0, 8),
        "b": entry("U8", [8], (1 << 64) - 9, (1 << 64) - 1)}), bytes(16)),

    # Layout of the data section.
    "overlapping_offsets.safetensors": st(hdr({
        "a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}), bytes(12)),
    "gap_between_tensors.safetensors": st(hdr({
        "a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 12, 20)}), bytes(20)),
    "data_not_starting_at_zero.safetensors": st(hdr({"a": entry("U8", [4], 4, 8)}), bytes(8)),
    "trailing_bytes.safetensors": st(VALID, VALID_DATA + b"\0\0\0\0"),
    "data_but_no_tensors.safetensors": st("{}", b"\0" * 8),
    "tensor_past_eof.safetensors": st(hdr({"a": entry("U8", [4], 0, 4), "b": entry("U8", [1000], 4, 1004)}), bytes(4)),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        if name.endswith(".safetensors"):
            os.remove(os.path.join(OUT, name))
    for name, data in sorted(FILES.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(FILES)} files to {OUT}")


if __name__ == "__main__":
    main()
