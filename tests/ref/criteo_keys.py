#!/usr/bin/python3
"""criteo_keys.py - an independent implementation of the Criteo key rule (worker/data.h), for
the README's sample and tests/test_data.c's golden file.

    /usr/bin/python3 tests/ref/criteo_keys.py          # writes criteo_sample.tsv, criteo_golden.txt
    /usr/bin/python3 tests/ref/criteo_keys.py FILE.tsv  # prints the keys of FILE's rows

Rule: a row is `label \t I1..I13 \t C1..C26`; column col = 1..13 for I1..I13, 14..39 for C1..C26;
    key(col, bytes) = mix64(fnv1a64(bytes) ^ mix64(0x9e3779b97f4a7c15 * col))   (mod 2^64)
mix64 is splitmix64's finalizer, fnv1a64 the 64-bit FNV-1a. Empty fields give no key.
C*: key(col, field), value 1. I* "bucket": b = v if v <= 2 else floor(ln(v)^2), key(col, str(b)),
value 1; I* "dense": key(col, b""), value float32(ln(1 + max(v, 0))).

Golden format, one line per (mode, row): `MODE ROW LABEL KEY:VALUE ...`, keys as 16 hex digits,
values as the shortest repr of the float32 (exact through strtof).
"""
import math
import os
import sys

import numpy as np

M64 = (1 << 64) - 1


def mix64(x):
    x &= M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for c in b:
        h = ((h ^ c) * 0x100000001B3) & M64
    return h


def key(col, b):
    return mix64(fnv1a64(b) ^ mix64(0x9E3779B97F4A7C15 * col))


def row_keys(line, mode):
    f = line.rstrip("\r\n").split("\t")
    assert len(f) == 40 and f[0] in ("0", "1"), line
    out = []
    for col in range(1, 40):
        s = f[col]
        if s == "":
            continue
        if col <= 13:
            v = int(s)
            if mode == "dense":
                out.append((key(col, b""), np.float32(math.log(1 + max(v, 0)))))
            else:
                b = v if v <= 2 else math.floor(math.log(v) * math.log(v))
                out.append((key(col, str(b).encode()), np.float32(1)))
        else:
            out.append((key(col, s.encode()), np.float32(1)))
    return int(f[0]), out


# The README's five lines (Criteo-style: hex categoricals, empty fields, a negative integer),
# then edge cases: every feature empty, integers at the bucket boundary and int64's ends.
SAMPLE = [
    "0\t1\t1\t5\t0\t1382\t4\t15\t2\t181\t1\t2\t\t2\t68fd1e64\t80e26c9b\tfb936136\t7b4723c4\t"
    "25c83c98\t7e0ccccf\tde7995b8\t1f89b562\ta73ee510\ta8cd5504\tb2cbb0ae\t8a4bb2bf\t"
    "1fd7b3d0\t07d13a8f\t3b3ef82c\t9b7b7e5d\t3486227d\t3754e9c7\tee58d6f0\t\t"
    "2f9b1c5b\t\t3a171ecb\t48a4c0b6\t\t",
    "0\t2\t0\t44\t1\t102\t8\t2\t2\t4\t1\t1\t\t4\t68fd1e64\tf0cf0024\t6f67f7e5\t41274cd7\t"
    "25c83c98\tfe6b92e5\t922afcc0\t0b153874\ta73ee510\t2b53e5fb\t4f1b46f3\t623049e6\t"
    "d7020589\tb28479f6\te6c5b5cd\tc92f3b61\t07c540c4\tb04e4670\t21ddcdc9\t5840adea\t"
    "60f6221e\t\t3a171ecb\t43f13e8b\te8b83407\t731c3655",
    "1\t\t0\t1\t14\t767\t89\t4\t2\t245\t1\t3\t3\t45\t287e684f\t0a519c5c\t02cf9876\t"
    "c18be181\t25c83c98\t7e0ccccf\tc78204a1\t0b153874\ta73ee510\t3b08e48b\t5f5e6091\t"
    "8fe001f4\taa655a2f\t07d13a8f\t6dc710ed\t36103458\t8efede7f\t3412118d\t\t\t"
    "e587c466\tad3062eb\t3a171ecb\t3b183c5c\t\t",
    "0\t\t893\t\t\t4392\t\t0\t0\t0\t\t0\t\t\t68fd1e64\t2c16a946\ta9a87e68\t2e17d6f6\t"
    "25c83c98\tfe6b92e5\t2e8a689b\t0b153874\ta73ee510\tefea433b\te51ddf94\ta30567ca\t"
    "3516f6e6\t07d13a8f\t18231224\t52b8680f\t1e88c74f\t74ef3502\t\t\t6b3a5ca6\t\t"
    "3a171ecb\t9117a34a\t\t",
    "1\t3\t-1\t\t0\t2\t0\t3\t0\t0\t1\t1\t\t0\t8cf07265\tae46a29d\tc81688bb\tf922efad\t"
    "25c83c98\t13718bbd\tad9fa255\t0b153874\ta73ee510\t5282c137\te5d8af57\t66a76a26\t"
    "f06c53ac\t1adce6ef\t8ff4b403\t01adbab4\t1e88c74f\t26b3c7a7\t\t\t21c9516a\t\t"
    "32c7478e\tb34f3128\t\t",
    "1" + "\t" * 39,
    "0\t-9223372036854775808\t9223372036854775807\t3\t7\t8\t-2\t\t\t\t\t\t\t20\t" + "\t" * 25 + "x",
]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            for i, line in enumerate(f):
                label, ks = row_keys(line, "bucket")
                print(label, " ".join("%016x" % k for k, _ in ks))
        return
    with open(os.path.join(here, "criteo_sample.tsv"), "w") as f:
        f.write("\n".join(SAMPLE) + "\n")
    with open(os.path.join(here, "criteo_golden.txt"), "w") as f:
        for mode in ("bucket", "dense"):
            for i, line in enumerate(SAMPLE):
                label, ks = row_keys(line, mode)
                f.write("%s %d %d%s\n" % (mode, i, label,
                                         "".join(" %016x:%r" % (k, float(v)) for k, v in ks)))


if __name__ == "__main__":
    main()
