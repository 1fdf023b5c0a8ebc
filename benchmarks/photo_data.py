"""Assemble extra natural-photo TRAINING data for pxzip from pinned public sources (issue 16, part 1).

    python benchmarks/photo_data.py --out runs/photos-extra

Sources. benchmarks/photo_sources.json pins every photo, either as a file in a bare git repository
(repo, commit, path, blob), read from --mirror (default /work/.mirror, laid out as the search tool's
`fetch` leaves it: <mirror>/<owner>+<name>/repo), or as a member of a Debian package (package,
version, sha256 of the .deb), read from --debs (default runs/photo-debs; get them there with
`apt-get download <package>=<version>`). A missing repository, commit, blob or package stops the run
with a one-line error before anything is written. The list was curated by eye (see "about" in the JSON).

Each source, in the order of the list:
1. decoded to 8-bit RGB with Pillow (EXIF orientation ignored; images with real transparency refused);
2. refused if it is a test image: its path names one (Kodak, Lena, mandrill, USC-SIPI numbers, ...);
   its RGB pixels, in any of the 8 rotations/flips and after an integer box downscale when its size is
   an exact multiple, hash (sha256) to one of _TEST_IMAGES (Kodak 24, USC-SIPI misc, Waterloo,
   imagecompression.info; hashes computed from those files when this script was written, so the check
   needs none of them); or its 8x8 luma thumbnail is within NEAR_TEST of one of theirs in any
   orientation (catches re-encoded, resized and slightly edited copies);
3. refused if it duplicates a photo already accepted in this run (same pixels, or same aspect ratio and
   8x8 thumbnail within NEAR_DUP);
4. downscaled by an integer factor f >= 2: the image is cropped at the bottom/right to a multiple of f
   and each f x f block replaced by its mean, rounded half up, in exact integer arithmetic. f is tried
   from f0 = max(2, short_side // --target-short) (default 512) upwards while the short side stays
   >= --min-short (default 256), then below f0 down to 2; the first f whose output passes step 5 is
   kept. Sources whose short side is under 2 * --min-short are refused as too small;
5. an output passes when it shows no JPEG block grid: |grid_score()| <= --grid-threshold (default
   0.02) at period 8 and at the periods the source's 8x8 (luma) and 16x16 (chroma MCU) grids become
   after the downscale (lcm(8, f) / f and lcm(16, f) / f); a source failing at every f is refused;
6. written as <out>/<set>/<name>.png (8-bit RGB) with a MANIFEST.tsv row.

grid_score(img, p): with s = R+G+B and each step |s[x+1]-s[x]| clipped at 2 * (median step) + 2 (JPEG
block edges are small steps; clipping keeps a few strong natural edges from dominating), the mean step
over the steps that cross a multiple of p (between pixel p*k-1 and p*k), divided by the mean over all
other steps, for rows and for columns, the two ratios averaged, minus 1. About 0 means no grid; JPEG
photos score well above (see SUMMARY.md for the distribution); a negative score (smoother across the
grid than inside) is periodic processing too, hence the absolute value in step 5. jpeg_grid_score in
the manifest is the source's score at p = 8 (the column of that name in
../shared/data/photos-train/MANIFEST.tsv is a score of the same kind); out_grid_score is step 5's.

Output (--out): the PNG files; MANIFEST.tsv (the shared manifest's columns for the source, then
source_commit (for a package member: '<.deb file> sha256:<its sha256>'), licence, factor, out_size,
out_bytes, out_sha256_file, out_sha256_pixels, out_grid_score, thumb8, note); REFUSED.tsv (every
refused source and why); summary.json and SUMMARY.md (counts, pixels, bytes, score distributions,
and a digest of all output pixel hashes that another session compares with the pinned
expected_digest). A rerun with the same script, list and options keeps every output whose file hash
still matches and redoes only the rest; PNG files in the set folders that the run did not write (left
by an earlier run) are deleted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import math
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = REPO_ROOT / "benchmarks" / "photo_sources.json"
DEFAULT_OUT = REPO_ROOT / "runs" / "photos-extra"
DEFAULT_DEBS = REPO_ROOT / "runs" / "photo-debs"
DEFAULT_MIRROR = Path("/work/.mirror")

GRID_THRESHOLD = 0.02  # refuse outputs whose grid score is above this
NEAR_TEST = 6.0  # mean |difference| (0..255) of 8x8 luma thumbnails that counts as a copy of a test image
NEAR_DUP = 4.0  # the same between two sources of the same aspect ratio: a duplicate
ASPECT_TOL = 0.03  # |log(aspect ratio a / b)| under which two images have the same aspect ratio

MANIFEST_COLUMNS = (
    "set file size bytes sha256_file sha256_pixels_rgb source_repo source_path source_git_blob jpeg_grid_score "
    "source_commit licence factor out_size out_bytes out_sha256_file out_sha256_pixels out_grid_score thumb8 note"
).split()
REFUSED_COLUMNS = "set source_repo source_path size sha256_file jpeg_grid_score reason".split()

# Path names of test images (the pixel fingerprints below also catch renamed copies). Generic words
# that are also names of test images (boat, house, bridge, airplane, ...) are left to the fingerprints.
_REFUSED_NAME = re.compile(
    r"(?<![a-z0-9])(kodim\d*|kodak|lena|lenna|mandrill|baboon|barbara|barb|peppers?\d*|goldhill\d*|cameraman|"
    r"zelda|tiffany|elaine|usc[-_]?sipi|sipi|waterloo|tecnick|imagecompression|\d\.\d\.\d\d)(?![a-z])",
    re.IGNORECASE,
)

# Test images, two lines each: label, height x width, sha256 of the RGB pixels (gray images as R=G=B);
# then the 8x8 luma thumbnail (fingerprint(), base64). Computed with this script's own functions from
# ../shared/data/kodak and from the Zelex/images repository at commit
# 0b8a89db599a384124fb991b85d40cfd63c73d58 (usc_sipi/misc, waterloo and the imagecompression.info
# files that snapshot holds, "icinfo/"), leaving out the synthetic charts (rulers, gradients, text).
_TEST_IMAGE_TABLE = """
kodak/kodim01 512x768 a00210743353594464ac67e680a41710f484444ca5f9dfddeb570de25c428273
  dnt9gnN3eoBjc3yBWH96cnR9gYFweX58h4uHhoN/goBYfF56W1pbV056VnVSU1xea3lRa3B0d31KTFxaUk1JWg==
kodak/kodim02 512x768 ae5a495df4ec40e0941265440ccf98973915b4190ab803e37a23ca93dd43a07e
  UlZWW0ZTWllQUFJYTD1TUFVQUlNQQVJST0OJU0JASlFQRk5MUE1BUVBOTlBQTUNPU1RTVVBPTUVNT09UT01OQw==
kodak/kodim03 512x768 234e61f585503f2a44400f5561131e8a512ef2c15328cd83d5cdbf10e2616cf2
  dVdZXWFwgLqQmYRcX2l9sIWDq29faIGGgmxzdWhua25mPmhjT1hxY1wzQ2dRRz5oTzNEcU1RTm9ILkV5RlRZYA==
kodak/kodim04 768x512 e88e788fca00e6c723bb66ff45edb8cb56091ee284dcb73e3909834f2c96eeb6
  jX1wY219kpV7Uj5FUVZlfzovRk9WZmZHODtmX29pZEpROmhvg4hjcEtFQml3ZmVvW0c+UYaSiXhTRzpMcoaDcg==
kodak/kodim05 512x768 ed3d1ee770909d3b27903b52ce19ee59a9bf24621a7bf1fb57b90677da880cb6
  gV1yVWp8XFV4aopdVmZaUFxTcVhXUUpLVlBgdF5zXV9gVU47Qzo4REwwPDc6QkNCMS1GQ0hETUk3PUZMSk5ZWw==
kodak/kodim06 512x768 7f45158999fa297d1cfbd292b3e2f3f5b27770701c3473155c211c3f512cc97f
  7fPw6OHTv7a1w9bU49TGtYKIjYyVk5SLn5mQgIWEfnWDd15qdHRybHhfSFJTZWdiX1tKSVNcX1tYUktER0xQTw==
kodak/kodim07 512x768 4e3664bf6fe865b49f15f7b554efa7dbecaf73ae0e8699f2e307bf07849f1264
  eoR1hHl2a2x+f0RSiG5YR4B9QVaKb25Xg4FIZYhvcHCCfURciHpkXIKCTFV/ck1Sc4eBf4JyU3xZd3BxeH1kYw==
kodak/kodim08 512x768 889c3740e4ed54ca53d11ae735a44d15fa24fe312b3bd1609a80618a4092c208
  sqyRVG2OgoRiX1JkZ62ZmWRWal6IgY+IT2t9Zq2JhoxWl3JNb42HlFKGcFaZuryxT4BuQld5j5c+eWVYd5CFhA==
kodak/kodim09 768x512 f8453140e63a42301a6dbebb849a3cc40d34e4e59580eb1f372f7f5460df0dbe
  eoKEh4iIg3iMkpGNhoeDfZOZkY+bi46ImJ+TY2NQYZCbnHGIeIh8k26GwZ6rwbiAYXOFioZ/h3ReaWtlY2ppYQ==
kodak/kodim10 768x512 fabe11b5c4f028394e093a5b5907e5fabc8072da0d5334fb3a38547a7e1be842
  bYN0RkxcbGmAkGVTXmqMbpV0Z2hwenV/eXd8fIF7f5ODjZmNhH6jop+tsZpzmZvQioB2aEtTXXNiaGhgYV9jXw==
kodak/kodim11 512x768 ab4dd9bf8431e717d33892b3ba03c63bfea3c7fa72c2610010de7df3c194c075
  eXt7e3p6eHNXWl54bFZbWDY5PEZcJyMiPVREV0QoKSlRSEBhWGg9KHN0c25ydmdec3R0cWhdYm1yc3Nzd3h3cw==
kodak/kodim12 512x768 f412db2168e599949aac26bd3264f111b23a684f30a21cfd320e9e95bc69bbae
  vMTX7+/krEK1wcaDaFhNRaOrhXDKy6uSlqJsZ8rLtqCZpoSBwsSxpZyllJa0ua6km6Weoa+wrKKTnJ6eo6Whlw==
kodak/kodim13 512x768 875703d56fb9396f478b5d7d3b18e2b77c17147a685c6dc2567e1c574aaf01e3
  Q0OPvc/cmFVHQklRlo9fV01JTUtMRj8/TTY6V0xmV05mcXVoeoODenV1fHyIemBkcXqcgIKCaWyFfYN2gGBkbQ==
kodak/kodim14 512x768 2bd5029ee75ac1697542e5b05624e8afe186e3250abd7513d6a806b52084c2f0
  fnZ5gkZPQDuHj4x7blhKOGVXdIB8dmhYZFZZc3FwfGtObGR3dFR0bSVBeJqEZ49VHiQySo+TYkMYHykzN0lIOQ==
kodak/kodim15 512x768 b5353e7511277009922ecbdebfc6418fec53aa1b2a08d44fc957a7540825697b
  t5Q3I0pTMlPIoxwdYVIwWs/ZMClVUCRk2u+mPW9iMZri51xeTlMwy+W0SDgtPlTw535HOSc0dejNS089JTAZeA==
kodak/kodim16 512x768 ed21745fd32fce95cc2c6af7fc52b1b15e590c7a14ab18ab34bd65ecaf955ac7
  ZWhqbG2acGqLkHt/iL+rfZOWj4yatLGqZXNxcmxbg4JeYllYX3R2blBPSElRZ2RcPT82OkFXT0kxLzIwNj45OA==
kodak/kodim17 768x512 566bc866664e9b06dc86e2654051b454844efe17322dbf7e24156d8243f1943e
  FhAaIzAfFRgUDzRiUTkOEjk0QYRZOysrQW5/ZXNxdGxlgYiAiYlueFlygYJUb198V2BFPTI4LzRtc2pMLDlIKg==
kodak/kodim18 768x512 3475af71066f3ca8206eb12cfc989ebe9c6e44820a96604e88ae018606e1f7bd
  P0FMRjokIygtN1JLRzkmPXRVRjp8OTQ9cmZQMoAvOTNZXU1AREZUUUtHQkVCMklXMzVIMjwpVGVLUFxIb1xtZg==
kodak/kodim19 768x512 7956408ef24222d37ac53f579bd24d5b2c3557b16c657e8b71c1b6ae9f18de1b
  b2JfaWtwbHdhZXF2U3WPmXZyb3p9m5KVe3Jtc4/EiI26v5GMssNxfo6Fm5CKelxYfFFRR0hEQUhAR01LS0tIRg==
kodak/kodim20 512x768 666ce8f2db5566a123bb081e70618f6f4c4253df960f3b41bb9dcc3dd134f3cf
  /v7+/f38/Pv84vb+/v7+/vjG/P39/f3935m98vr6+fnYiWud0+zhvn2HQldYQTVKXV1TMkpDVWRcUUpGQERLTg==
kodak/kodim21 512x768 2d6902daf7c4486b7c8c04d834091841a2b38c8f0c81cd7a963a6510b34a2a6a
  fHl5e319fHmEgIF6h4OCfo6LjJqOj4yGiF6DwJeWjo5kYmSlZHp6ekxUZ2d5XHh3Y2pmSVBxb1xKRURVUExJRQ==
kodak/kodim22 512x768 f430842120c108b67725ada96b8b7b2a914f6a0915eacd5595064c6c1a5d70a0
  m6WioJqbkXR+kqDQp5aPgmdtWHaPpJl+VF5cUmiLdlJRVGFWV2NnXTpJSklham9tQ09RZ2hqZmNsa2trY2JVTA==
kodak/kodim23 512x768 81992a83592267e69125666f3e3e04c1819529b4c4c1e55fde0a6a741bac4219
  bEBwal9kxURmUriPYWmPPGtqxIdsfW1DY3Odh5B7X0pdaJ6geVFNTFhcjJR4Uk1JVH6xgHZNTU5Ge69uaUZARw==
kodak/kodim24 512x768 e3e3ccc3e795b82a3da66934409dfe98ce0f5aadc6d7767543c506453599bb98
  7tbDqJCXe2j0h0+BinFfZ7ZNam53lFhfa05gWY5kS2ReWk9KcmVHKnlYVVt0XkZEbVZtWnddTzpPVGBjfGpSVA==
icinfo/gray8bit/artificial 2048x3072 59288e88b46685c0eb4be2108c0884c4c654ed5b2e6b1d58fa695cf03c040eda
  AAAAAAAAAAAAAAUJOxAQDgAEJmVNTy4nDDRAVlB4KS5LYl1oc2QdLT5TU1pmPWNUYGErSVVfTF9je2VRYlk3PA==
icinfo/gray8bit/cathedral 3008x2000 1fb1f9e28e47e1925024c87324caabe2e7506e554e8b0f5be5abae79115f44b8
  l0oxNjlKKBu2nkxSP2WJK4wjJ0pHO1InNBcnIRwZGxkdFicWExESGBQWKxQSGRQaCgwrDwsMFCIGBwgHBwkNDQ==
icinfo/gray8bit/fireworks 2352x3136 21d2178cfeac6fe2feb9d1093c3eb7612155249aaed28af10272a861b55e3cf8
  AAAAAAAAAAAAAAQLBQIBAAAjPT0nDQwEACtLTTUKCwUBDiAgGwkSDgUIERAJBAYEAAACAQAAAAAAAgQDAQAAAA==
icinfo/gray8bit/flower_foveon 1512x2268 f276c782bdb032c3a25be29c03e0642ac2a6b031f12457ee7c3c5ececad7d7b8
  Li47QlJ4iLosN0NBQUhdvyw3SFVANDZaIjZPZE4yIy8XLz9fZjEaHhg1WHVFIBsYGzFDTD0jJBkhHjE8Ly4mMQ==
icinfo/gray8bit/hdr 2048x3072 6aa2e43f437d1aa7e2d34d0ebdbb84f818a5516607d45d6f2060abfc1b3b21c2
  s15IRkg2LSmrNEVORDgxMZ4tMDk5OkRHYC01MDMxUV4nJzJAOxsvUzgoLkBFJiE5Ry0hLCwxMldrRTMmJUNBRg==
icinfo/gray8bit/leaves_iso_1600 2000x3008 74cf5c4a33c45ce024cc4f985ef88be12e25f0183fc9728f0c6b58c216f7b6c9
  QDAuMHqLgGZCLz5JV4Npai80T19vd29lUVBEPEVJYF1vUztkXlRaSVEvOjtEWVVTZ3hFOj5TW1ZHZ2VLOUZESQ==
icinfo/gray8bit/leaves_iso_200 2000x3008 eae9f358ec87c7952002efd699b08b92c4434b36954b3cb0f7efc5e0498862a6
  RTMyMnCMfWNGL0BLVYNoajI2TVxudG5lXmRDPEdIXl1zUjleWlJYSFM4P0BCV1FPZ3tEOz1QW1Q+Zl9IOkg+QA==
icinfo/gray8bit/nightshot_iso_100 2352x3136 63688d158cd74287c8057e7f0fc29a1fabe680d71527abaeb961e810a62817ae
  EhYdGhsoGxUUFxwaHU8gGRYYHR0fKDUeExgmMSs2TDIIDBMYHyoxORsfJiY+cVWxJjA6UltKWtI6SUVKR0F1pw==
icinfo/gray8bit/nightshot_iso_1600 2352x3136 cb6a5aab91ac0aa957d325779cbdf29d41c5a1e531201aad87deba920af33cad
  CgwTFBIjEw8KDRISFU8YEAsOExQXHzEVCg8dJyEtRysFBw0QFyImKxIVGxosWDmqHCMqPEc0RrswPT5DNS5acw==
icinfo/gray8bit/spider_web 2848x4256 cab9e8f9d3ba66295afa4c89a017e92cdef2a7a74a158d9e479275ee0c5410d9
  dHN4gY+ihbF3bXOGknyWtGx1fIqFiI+wXVB2XFJaaq+yfmRjZ4CFralefHZdZn6nkZ5vZlZJZaJGvHJzc4SRoQ==
icinfo/rgb8bit/artificial 2048x3072 f939246ace1789e8d20fa2667316b12b56c8b56a892508b04d4d795513e50af0
  AAAAAAAAAAAAAAUJOxERDwAEJmZNTy4nDDVBV1F5Ki9MY15pdGQeLj9TU1pmPWNUYGErSlVgTF9je2VRYlk4PQ==
icinfo/rgb8bit/flower_foveon 1512x2268 8e47005da62ce3e1dfa16934eff851bf6486137ee6ce374798e5afa6e52831d9
  Li47Q1J5iLotN0RCQUlevy03SFVBNDdbIzdQZE4yIy8YLz9fZjIaHhg1WHVFIBsYHDFDTD4jJRkhHjE8Ly8nMg==
usc-sipi/4.1.01 256x256 46c2d0117b443f9a9b3c9c21a843d8812bcbb7d51bbf42568352797735c69164
  LC8pSGVJUoctMDtPLk53XiwvLSQcOWRTKiw1TCw+akonKS1CNGFsSiYeHSQhPlNhGi8iGBcXK0oLKRQiTpBFKQ==
usc-sipi/4.1.02 256x256 5fb859e4603565c83389d39cde9afab73cde934b36a1ec80292b8a4ac82dc862
  E0c+ai4yMS8VJTFTNy4oQRQFCEM0Hxw7EwYIRSQeGyAbEwwdDBUXGxMRDiQTEREFBAwLEiciKi4ECAweODAzPg==
usc-sipi/4.1.03 256x256 343d8081ecc65d6c03e149bc5d0f9e2d91b3042a42bcf87cbda56511e853195d
  np+fn5+fnp2QkZGBiJGSkpCSc0pQj5KSj5Bldm+NkJCOjouPjo+Pjo2Nl3CRhYmNmICChIJ9eYqukpWUl42KnA==
usc-sipi/4.1.04 256x256 c5d50aa24e2dc4beabbbbe87ec477712c0045bf1ac583b9152247dfd220643f9
  OF2PgISKgYw6W5WFVkqBkj1cmnFAlEubPlucW3KbSqA/XKNPXJQ1jz9cp1RLgk+hQVqdQV+EhJtFXJxvfoiBgw==
usc-sipi/4.1.05 256x256 98705d3fad694efaeb0963d44ee4e491b719fddbb49ffd639e4a15a9592c79ca
  ubixs7m5ubm7vXyXqrq8vLu8fGZ3eniHu5B5e2Zya2m9bX2Ll3luVbuFfYKThYRurn19fHhgWV59enp6aEZJUA==
usc-sipi/4.1.06 256x256 741287f8adbc1408d1d184fa9ea115a336d304587786991390ff9984a8bd6252
  vcPJfFRhzeE/PTw7RW3C4XNVY4lzc0pyqa2SvbKwtsqsuJCngoK+x4Szj3dVYXGAYVNLOzhAtnt1fHZkXVFNTQ==
usc-sipi/4.1.07 256x256 ce61dcf9531fe03b261a99d0b9a15205d7898b23d1769c8f74317e8338f8b50d
  pLG6vb+/u7KxvMLFxsXDvba8rqqsr8bDt4x9dYJ5scS5dHB5eoOtxbmmk4eqtsbFtb/DxcbHxsOuur/AwsPDwA==
usc-sipi/4.1.08 256x256 2a2b0c1e043f2b31c392bc57bac47767704d2dac9fca5aadb15d0ddd8caf5d91
  mqmys7e3s6qtub/Cw8LAurW2r6C1o7XAt3F/doRojLm0YYaFkG6VvaZ7jV6Kfreot72uxMSluMOyvMDAwcLDwA==
usc-sipi/4.2.01 512x512 fe342d2ced2367f4e855036acfd1278426a8942d6dd79013665b7ca51225280b
  QisxODs9OyBJTlRaW1ldNktTW19kZ21JTlVfbHBzb0pOYJW3taqZSkxXuru5vp1JUldzj76xckdVX2tvd3luSA==
usc-sipi/4.2.03 512x512 526f7c8cc1eea030e4417c189920223fb5b3e59317dbca2118f4832f72f97ef2
  fG5bWWNrc4qDhGdicXSFkXN8nZKeoY+MZV6ulZ+pe3OOPJeTn49iX6Fxb4eKd2xpppKKgICAlH+XgKSampJ8bg==
usc-sipi/4.2.05 512x512 c9ca18e8a90f4c9d045fdb27e034bd7991a7576974920c9ff7ee16cd3cadbd6d
  rrjDxsS/r6vHysXBwsfM0p6NyMTK09TVpXuhs6SasMF7mImekbnY3q6bjYSDjsXb0NCtkZWqm9jO0M3CwbeHnw==
usc-sipi/4.2.06 512x512 d9feb994df236f0ebf6e7b19c6b4dedd0a9a6ca7c7c4902d6df5565e095e7923
  WEWitrWnfWRQSK7NzLBjVVdCpNXTtHlkU0+bwsrBYnFLNEZUTktLVE43Y5SImD9Oeldqr7Cyn3J1az+dnaOZkg==
usc-sipi/4.2.07 512x512 a18d4e9adaa8677dbf9d454680ace6000767e81a349ddbebf988670d1623bb85
  jXp4YYWlpYp9V3FgaH+Cn3KMrndsd3ecSG20X4V6eKg9e5yQmJVsXTeNdHOFhl9caZtZUW58UDqrtYxeREhrfQ==
usc-sipi/5.1.09 256x256 2482c9962970f665f6809ddf9838f92d4abb2b40a250275b99df3fc98485819f
  j4aBiI2RiYmYiJSIlmyTn5SRioCBc5mdi4F8cnGBmpuCenNmZnyVm4J/dFtqcH6XhXt/U05ueJJ/aWhjTHR5kA==
usc-sipi/5.1.10 256x256 938771ecb839dbf9ce9ac8b95fcbcf8208d4a4f2031eeaf3335a45de1e3ab322
  ipOHmIiDipeHgZ58iZCQj5yFgJZ9dYd+e4WwgoCPg3WNjImSkaCKlpWaf3WfmqObn5aYc5mUlIqflJh+j4l8dg==
usc-sipi/5.1.11 256x256 211fd48a6f47fb7c37b79cf582f0708f83b68a9ea389fd2be73bb83a94fdb2f1
  eoWVmaCYjHySq7e5ubapl6e/zM3JyL2mtc7V2djWyrzB0ri53d7Rxs/c2MvJ4dPEz9zB2eDg0szO2uDf3d3Oyg==
usc-sipi/5.1.12 256x256 af0d4c39f7b3b8420b681c687df71c878bf46664422aa62184f27f257306725b
  wMvR1NXT0cvN2t7g4eDf3Njj5ebXqsTj3uXm58NnhOXg5ubnxlh65K+Wtue0X3ujlI+Y6X5BSmGcn7bftYuJjg==
usc-sipi/5.1.13 256x256 9f1f54841b1a91caf20e0df7308d4b952280aa35b1d36b2bcabb4b8880356542
  ///q////9v/72czUnsbd//rJw8yhz9P+98fEv+HmzP33xLLh7PLY/fbKx+vj4Njm9tDH/6y2tfv//////////w==
usc-sipi/5.1.14 256x256 f928834744b60e57d369d7f9a7e6f1491714d24dae790f6a106ab0d633260624
  cHWAhYhwd2FghH5lWlhTVWyDcGNWR0hEfWt+V1hugH16eXdyfYR9h25+g5yMbGttVkpZg31iX3QpKiorS1hPVw==
usc-sipi/5.2.08 512x512 53ba572ef8d144c291e6716b83ac70117a9c6379662b6166ae5142ff7cd9b09e
  jZKPj31+hYtveI6LfYmVknV9kZ6PoJyKdH1blXuWi4xbc192cllKdWBMVXqEjId9UmNvi45xU0R9h4uPlHNcUw==
usc-sipi/5.2.09 512x512 5a54bd375ea7cf1176a1884931ce005ee4a5be6c0c223a4722d3e2ab882ee038
  qaqztsHIyLSiwsK9vc7IxKy2psDCwr2vtLWrw8DCwbXPyrWpqqi2uM60rLKftrG4t7azsbavo5W9srK1mYqLoA==
usc-sipi/5.2.10 512x512 278689daf6c3cb7add8f09315fc6079fe987f5ecd4d98871ffc34ec5d84aefa8
  o5aTcGhvX1yuo4yJZn1XV87NxsC7kHVwf1BDWnJXSlVoiFtTTFdLRqWEbmlcREZOq6eGhmZBOUR/gW1mW0RLQg==
usc-sipi/5.3.01 1024x1024 f4eaa2d69334159f81263772b50c5d56c487365fd8f0e3c03438bb890465b2c9
  dkkmQ29lX3RqORo3X5CHZmddG1iSlJNoQG0/O0+Kd2AyCkBJKXxeTxZbn4B8dFxIK4F3Qld+eoI5Ly8qHTtlhA==
usc-sipi/5.3.02 1024x1024 9f1a7e566b87b6ccd5a224bd5ad40100a6b5eb6bb55b0816c77e4bdf63315d99
  P0JGU1J+T104WlxuTm1rWzpqS3JLaHJbNk9UW1todF00NDtWVltYWzRXRGVbUVBbMVFHYF5VU1c1PDpLUU1UUA==
usc-sipi/7.1.01 512x512 6408ab5a5d59748f0806d17ccdb1c4d7d028f184f80552a9bcc299c146049cd2
  UlJUWV9nbFteXFxgc2lfWVlgZ3VpWV9XZnJzYGBkanJzcWMxRXV0XXWBgGJpcWtdgX99e3l1fIGAhYiKhomAfw==
usc-sipi/7.1.02 512x512 8f314593d0040ed1ac99dcdbd3c731db6011cf0045c587db77ae5a7bf871c3d4
  oqerrKysqqenq6yurq2sq6+wsa6isa+wtLSvjGubpLG4sqqQoaausby7uLe3rbe2ur/Bvru4tra6vL7Av76+uQ==
usc-sipi/7.1.03 512x512 f4a1f087ddb5ce32e96530fc0f8101f7e81ad9b3805357bb25f68b2fc745425d
  j5GRkJKOjZKVi4yKkpKNkIV8hYSKlZSTg4t3b117m5eJjnFlU12SkYd7b1VPaZKLi31qaVt/lI+TmJWSk5GWlQ==
usc-sipi/7.1.04 512x512 064605ed7776bc058e12ebc6ec0f4c4bd8610775c499dc6103f6b4831b0ce666
  c3JxZ2hbSDSAd19tTltRRIWIbYNya2JCfIWLfYB2aDZzb2mAgH9ySoqQkY+IgnxbkZCNko1+fFeSko+MkYKDXA==
usc-sipi/7.1.05 512x512 8611ea08a1b07e7e619ec85e1fa94ed12143caa36a5eebff4303b214511e1e50
  aWRzcXR5aXNJNWl6emZrZVxUV2dZWmplcHJycVtaaFV5fHdxbm5vXnqIenyDiHp4YGtYXE4wSmpziXl8Z2d3iA==
usc-sipi/7.1.06 512x512 26188c0b3acfb3ea09f14941d42638c5bb90a359959e6f580b790fd0c395f853
  PEVJWVVZXlRUVVI+OWVfWElVV1M9R1dXW1pWXFtIPVVpaGxcY1dIXSIoVWtsbWJlYmdpcn97aVhqbFhnhG9xfw==
usc-sipi/7.1.07 512x512 97dcbff2013e9bb883f61287b016b3e0589309fb05bc572da6f221cabd2774f9
  bW1wbm9waGNrbHFxbFRbXHBvZWVmbXBxalw6QVJkZ2xva3BwbHVzcmdudnlxeHZxXnyFbG1ybnJ2gHl7bnJ8dQ==
usc-sipi/7.1.08 512x512 59a2634dfa1ef2b214939176ffd3b333ce0959b52c013cdf0742947b9a81d04c
  bnl+eG9/gX13eXx8e3x9eHt8eoGBgoSEf4FrYWWEiIeCgjw6PnOFhIWGioqKiYiIjY6QjoyOkI6Rj5CSkpGQkg==
usc-sipi/7.1.09 512x512 06b6810ea438097e952befd06099d089dacdf3f031a04c855929a2e19c384562
  b2lmZmheU2FUXVVYU0xST15obGtwbGt5i4yFaIaPk5ORk3BlaI+Rj52deW51j42OpJ+hoZ2bnJuCmaKho5edlw==
usc-sipi/7.1.10 512x512 bc0111a0c09145a7c96ad00f7a863cf2e5f928a9c8f7677496a2094a643b1897
  Ym5zc09yb3VqWF9ZaHNnY3lbbYB4g3h2cm6FioZ9gXpicX1wVWyChnxyanqIiIyJXXGJj5GOiIJ4f4yOjY2GgA==
usc-sipi/7.2.01 1024x1024 c804fd012914b8af2d8a4847b92e04bdbada7ab367876373a017c367334bbb2d
  JCdTISEhISEbIH0xGxoaGhkYUlUoIhwYKBkuNigYGRcdKxczJhYWFhUdFSomFRUVFBQUGCkUFBMTEhISFxISEg==
usc-sipi/boat 512x512 81b92d2218178fd488cad48e674962b23631a93db8e15b38dc8242964af52cc8
  ipifrJ6VlJqaoZmik46YlpKdlZqYhImBnJyPg6BpVG+baV1/o1hOQXZmaV4sKTEkkIySj4qBgYCNi4yTkoZ6dw==
usc-sipi/house 512x512 dff1bbf6bed2e78432ab6144a32f883931e2034c84ee43f0a554bd733b019162
  j6XFycjKzNCWlJ/BtLvMz4eckqmtjaGfgY+HpaCrnXtjdG98lYeWhaGYn5OMoJKKp6uJhZyBjZPKw8C+xsfGuw==
waterloo/barb 512x512 954059039ccdf9a99ccfd36970f985393eb1c7aa45fa8152e734ad2f86c6ee15
  SoV1iHFeWm1fgqGfiklrcZ26qKpySmlmrHyamHJrgF5tV5RPSm+Da09PenlGT2lVZFhXcVJ+W5JWSW1feHtZeA==
waterloo/bird 256x256 276c377b53bc365c49d99fb66f95331eb954499e08667dced8878f5c40727027
  urOsp6GVlZ2vq6GboJGNj6ekkpSzjoWCnp6IVXZkd3OXlU9cOkheYJWTV6U3Q19UlZRoi0ZSVE+RkUw4U1tXUA==
waterloo/boat 512x512 1f2faf28c1116262cbd3228c9037e0534fc4edcf50c5bc3d106f075e3454ae7f
  oqKkoJ2doZmzsbespJ6hna6nrqmenKWfsKKrp4WlnImbhISiiGVwd3KDepdcVlNHaVlIIyQyOBWbnZuUhoWBeg==
waterloo/bridge 256x256 037673598726378598001a4d4c2f506eed40350f129adc10066e87ff70bfe9b1
  o5aTcGhvX1yuo4yJZn1XV87NxsC7kHVwf1BDWnJXSlVoiFtTTFdMR6WEbmlcREZOq6eGhmZBOUSAgW1mW0RLQg==
waterloo/camera 256x256 a4913edec84861842972a16b4cc66b20442be3586268c320f1603b7efbc374ae
  oKqyubetpZylr7RIlq2kmKeDG0RopKKVoysQEluiopWWNQ5Kf6KklmoND2F7XHNlgh4maoNxfHZ9O0p/fXx6cg==
waterloo/clegg 880x814 6ca77c9553a34bb71f62544c28defc9207f672aad242c223d1ce66d230645f2d
  d6bAycnN1cZ9sailwN3MtHyNpb3Gu6iWYIitsKafn2OKnraCk6SbY3J+m62uvJ1XWlKKn5Whck5YdlVjpW9mSA==
waterloo/france 496x672 448707b93ce79bc577cc8e321482a87abc38518b131e6e429a67128538e76fd9
  JTYiGhoaGhtQVVVXVFVWSH2Gh4aCgH50rKmqqqqvsIXeysvS3+LUkTJQTE1LLSM1HisrHxcQFCA6OTo5Ojk6OQ==
waterloo/frog 498x621 78994b962eb1cbc75a4c2bbfeb5afc080ea03bd2028f6853dbcaee4ec153e5f8
  Z4t/iGl/hI9ygn1iZnNhemlqYHB+hndxdHlydoWdgW2YkIWKkoJpZHF4cZ5wc4KIcWVVd3uKkpJrVXlwgoiMjA==
waterloo/frymire 1105x1118 01db4e840dd1d11806c1a30f977ab0c55bd7668c4dd615c4e1885ed8fb177f25
  SnJvQFJBb2xjaG1JP1M6ZGpKREpfVn1BRXSCfoNkZjmHlFeDa1RjZH9MTId1QEkR3OLSgn95hTPE4NaEPzxbVg==
waterloo/goldhill1 256x256 2ca0eb22ec2621cb01b98e39b9c7126f1dabace6f18a9cdcae3bd2c5eadc9b8e
  xszNysnDurBmfoOCdnh6dG1baHJeZl1kfV1ha05ITjV8amp7UDw2P29qe65liWc2V2RggVRyVDFndHd0b19BMA==
waterloo/goldhill2 512x512 59f74162b3daf57611db6bf568c20a452518dd740d784058039049c73bce1a99
  x83NysnDurBnfoOCdnh6dGxbaHFeZl1kfV1hak5ITjV8aml7Tzw2PnBqfK5kiGU2V2RfgVNzVDFmdHd0b19BLw==
waterloo/lena1 256x256 433a9dd1ad78f73cd26031a271c94a5e3a2d494fa2a20f4aebb41119a7c67c05
  gUpgbl91iz1kRFmOq15hPGVMYXuVrVt+Z0NUPJJnSYhgSC9deUJqll48SThuNX+/aS5GMHt2dnBzJS9McKJkPg==
waterloo/lena2 512x512 b94ccd5d371c69e27823c38da2310dbd1e6de2c61417380a9c4af3b3b2fe350d
  m2uBin+RoVmCZnmiuHt8VYNsgJOluW+UhWVwVaR+YZx9ZUh4lV+ApnlWYFiOUZPHgUZbTpeJi4aIPUdtkbJ7Wg==
waterloo/lena3 512x512 01f8ff0e23a809255ae52a9857a7aeb0f89d92610205fef29c36c3d359ac3339
  m2uBin+RoVmCZnmiuHt8VYNsgJOluW+UhWVwVaR+YZx9ZUh4lV+ApnlWYFiOUZPIgUZbTpeJi4aIPUdtkbJ7Wg==
waterloo/library 352x464 9bcf62ca507214763e89074270d850862e6e3a28f3648e6661bad4e17cf53a2f
  g2mjoLLF0eqBU2xvkpWSqHUuQyyGkpKna0lMRn9WYGuakJPLvkY+YICFbM3qvrqjZGxFqOXe1dWUoozF09rW7Q==
waterloo/mandrill 512x512 06502474bc77691289392819fcb7c092701be6b4bbcc6f3155d2cac5699b4191
  e25bWGNqcoqCg2dicHSFkXJ7nZKdoY6LZV2tlZ6penKNPJeSn45iX6Bxb4eKdmtopZGKgICAlH+WgKOampJ7bg==
waterloo/monarch 512x768 601d3e0f5563eeef71d45f8a89ac73cf2f3d546cf572b8f8744950d17927c0d8
  k2VcaFdIUWiZY2BuYDxAZntraWNuXEtqWWBug418fHWBbHB/lW1kd217eHmRaXRvamxuXE5teW1MZVtbTVBsaQ==
waterloo/montage 256x256 3af9e4db7e7a30df6251c977312da262f41ea12789277ecd2c1d0f5bbcb47668
  FBQUFBFp7uomIiYmP3XWnSQiISZtk7RcFBQUFJufuWU5bpI4qaSckUNuYU6XpZaONmZNaYGyq3slX3dmYmhuag==
waterloo/mountain 480x640 e79784749d567d0920c9952f4a434778f24650dd6e397b694c754b7e06b5484b
  5ejp5nOq4ubp7e+quHJ7iZV2nIGxvnp7RXtxUIFsM0F4grRyPkBZU09Si2lnXTtbn7CmuKqhdRWNmKacqZZpFw==
waterloo/peppers2 512x512 15a4623799b8e8bbedf3afffa6319dc23fc95a8e9f060138f8f364ac581539c5
  d2lhRXOamIFwQltCS2h6m2V/oF1RXW+ZMlyiSnlobZ4kaoyKko1jRCV9Zml+fVNCVYtLRGNyRCaXon9SMzlWaQ==
waterloo/peppers3 512x512 4105d5004b1650f612f36bf834b9345ec5b65675dbd4f4a03795ae61b1bef155
  iHV0XYGgoYR6VW5dZXyAmm+JqnRpdHSXRWqwXIJ3daM7eJmNlZFqWDSKcXCCg1xZZphXTmt5Tjekr4ZZQENndw==
waterloo/sail 512x768 9622121c3454c87a9ff871791ac3a5ce07041006f9fe66656befedbc82f32950
  YmJgWl1pW2BxgGlhfHprXm+CgneUjHCOgWN4gImGbF58dWd3hWt2UGtyaGyLa4dqaXJpd3BvZX5ZXmFvWFBbZA==
waterloo/serrano 794x629 1fbec86a25cf6ff7619bfcf6d7471da0adf71be979e5f1f5ede6270e2eb252ab
  ZHZ6hm5nYER8qJWca6mRU3+X1L2XmYt7T2OoqMi8o4Q/M0BThcSzlHVFNC9WnIaQpJGSbWp4ZHiQlJWFkVptjw==
waterloo/tulips 512x768 78bbcbcd725fbdc5dd55fb8f8409b341b4a60d77411ba9ee13f8384051d625fc
  m2d+fldYMzY7c5lHZ4F2NDNme496UJk+YHlapn5ZdkVjmW90fIGpfTx0cHeahHYyOnKXgY+CPg5Td5FhWzpKEA==
waterloo/washsat 512x512 fa251931caf5e83af54a215389d59b4c94ffc0e763f78d8460d127789fcc6927
  PD47PUBCP0M5Pz1ARkVGQTk8P0NFSEREPDxBRElIRUJDQ0A/QUhFP0BCRElARUNCQkJEREZGREBCQ0FAQUZEQg==
waterloo/zelda 512x512 e15eaac678a2f6ef7a5e0d2a245de925fa4778457314df01777f5044f1846724
  MVlehHmJGkYya29XQUxUWVJZSTIqSW5gdGtVOl1QSVOAbFBme3R6Yod8ZGtteXNpknhgSGxdVk+RT0A6Niw8Kg==
"""


def _parse_test_images(text: str) -> tuple[tuple[str, int, int, str, str], ...]:
    """(label, height, width, pixel sha256, thumbnail) tuples from _TEST_IMAGE_TABLE's text."""
    lines = text.strip().splitlines()
    out = []
    for head, thumb in zip(lines[::2], lines[1::2]):
        label, size, sha = head.split()
        h, w = (int(x) for x in size.split("x"))
        out.append((label, h, w, sha, thumb.strip()))
    return tuple(out)


_TEST_IMAGES = _parse_test_images(_TEST_IMAGE_TABLE)


@dataclass(frozen=True)
class Source:
    """One pinned photo: where it is and what it must hash to."""

    set: str
    path: str
    sha256: str
    licence: str
    repo: str = ""
    commit: str = ""
    blob: str = ""
    deb: str = ""
    note: str = ""

    @property
    def origin(self) -> str:
        """The source_repo column: owner/name, or debian:<package> for a member of a package."""
        return self.repo or f"debian:{self.deb}"


def box_downscale(rgb: np.ndarray, f: int) -> np.ndarray:
    """Mean of each f x f block (bottom/right remainder cropped), rounded half up, exactly in integers."""
    h, w = rgb.shape[0] // f, rgb.shape[1] // f
    blocks = rgb[: h * f, : w * f].reshape(h, f, w, f, -1)
    total = blocks.sum(axis=(1, 3), dtype=np.uint32)
    n = f * f
    out = (2 * total + n) // (2 * n)
    return out.astype(np.uint8).reshape((h, w) + rgb.shape[2:])


def grid_score(rgb: np.ndarray, period: int = 8) -> float:
    """Clipped step energy across multiples of period over that of the other steps, minus 1 (0: no grid)."""
    s = rgb.sum(axis=2, dtype=np.int16) if rgb.ndim == 3 else rgb.astype(np.int16)
    ratios = []
    for axis in (1, 0):
        steps = np.abs(np.diff(s, axis=axis))
        if steps.size == 0:
            continue
        clip = 2 * int(np.median(steps)) + 2  # so that a few strong edges cannot dominate
        means = np.minimum(steps, clip).mean(axis=1 - axis)
        across = (np.arange(means.size) + 1) % period == 0
        if not across.any() or across.all():
            continue
        inside = means[~across].mean()
        ratios.append(means[across].mean() / inside if inside > 0 else 1.0)
    return float(np.mean(ratios)) - 1.0 if ratios else 0.0


def output_periods(f: int) -> list[int]:
    """Output periods at which a source JPEG grid (8 luma, 16 chroma MCU) shows after an f x downscale, and 8."""
    periods = {8} | {math.lcm(grid, f) // f for grid in (8, 16)}
    return sorted(p for p in periods if p >= 2)


def output_grid_score(rgb: np.ndarray, f: int) -> float:
    """The largest |grid_score| of an f x downscaled image over output_periods(f)."""
    return max(abs(grid_score(rgb, p)) for p in output_periods(f))


def fingerprint(rgb: np.ndarray) -> np.ndarray:
    """8x8 luma thumbnail (uint8): integer luma, means over an 8x8 grid of near-equal blocks."""
    r, g, b = (rgb[..., c].astype(np.int32) for c in range(3))
    y = (299 * r + 587 * g + 114 * b + 500) // 1000
    rows = (np.arange(8) * y.shape[0]) // 8
    cols = (np.arange(8) * y.shape[1]) // 8
    sums = np.add.reduceat(np.add.reduceat(y, rows, axis=0, dtype=np.int64), cols, axis=1, dtype=np.int64)
    counts = np.outer(np.diff(np.append(rows, y.shape[0])), np.diff(np.append(cols, y.shape[1])))
    return ((2 * sums + counts) // (2 * counts)).astype(np.uint8)


def encode_fingerprint(fp: np.ndarray) -> str:
    """Base64 text of an 8x8 uint8 fingerprint."""
    return base64.b64encode(fp.astype(np.uint8).tobytes()).decode("ascii")


def decode_fingerprint(text: str) -> np.ndarray:
    """The 8x8 uint8 array of encode_fingerprint's text."""
    return np.frombuffer(base64.b64decode(text), np.uint8).reshape(8, 8)


def orientations(a: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations and mirror images of an array (first two axes)."""
    out = []
    for m in (a, a[:, ::-1]):
        out.extend(np.rot90(m, k) for k in range(4))
    return out


def fp_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two fingerprints, 0..255."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def pixel_sha256(rgb: np.ndarray) -> str:
    """sha256 of the C-ordered uint8 RGB pixel bytes."""
    return hashlib.sha256(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()).hexdigest()


def match_test_image(path: str, rgb: np.ndarray, table: tuple = _TEST_IMAGES) -> str | None:
    """Why the image counts as a test image (name, exact pixels, or thumbnail), or None."""
    m = _REFUSED_NAME.search(path)
    if m:
        return f"test image name: {m.group(0)!r} in path"
    h, w = rgb.shape[:2]
    scaled: dict[int, np.ndarray] = {}
    for label, th, tw, sha, _ in table:
        for a, b in ((th, tw), (tw, th)):
            if h % a or w % b or h // a != w // b:
                continue
            k = h // a
            if k not in scaled:
                scaled[k] = rgb if k == 1 else box_downscale(rgb, k)
            if any(pixel_sha256(o) == sha for o in orientations(scaled[k])):
                return f"test image pixels: {label}" + (f" (downscaled {k}x)" if k > 1 else "")
    fp = fingerprint(rgb)
    best, best_label = math.inf, ""
    for label, *_, text in table:
        ref = decode_fingerprint(text)
        d = min(fp_distance(o, ref) for o in orientations(fp))
        if d < best:
            best, best_label = d, label
    if best < NEAR_TEST:
        return f"near-duplicate of test image: {best_label} (thumbnail distance {best:.2f})"
    return None


def candidate_factors(h: int, w: int, target_short: int, min_short: int, max_factor: int = 16) -> list[int]:
    """Factors to try, best first: f0 = max(2, short // target_short) and up while the short side stays
    >= min_short, then below f0 down to 2; [] when even f = 2 leaves too short a side."""
    short = min(h, w)
    top = min(max_factor, short // min_short)
    if top < 2:
        return []
    f0 = min(max(2, short // target_short), top)
    return list(range(f0, top + 1)) + list(range(f0 - 1, 1, -1))


class GitMirror:
    """Reads pinned blobs from bare git repositories laid out as <mirror>/<owner>+<name>/repo."""

    def __init__(self, root: Path) -> None:
        """Remember the mirror folder."""
        self.root = root

    def git_dir(self, repo: str) -> Path:
        """The bare git directory of owner/name (<owner>+<name>/repo, or <owner>+<name> itself)."""
        base = self.root / repo.replace("/", "+")
        return base / "repo" if (base / "repo").is_dir() else base

    def _git(self, repo: str, *args: str) -> subprocess.CompletedProcess:
        """Run git on the repository; output as bytes."""
        return subprocess.run(["git", "--git-dir", str(self.git_dir(repo)), *args], capture_output=True)

    def check(self, sources: list[Source]) -> str | None:
        """One line naming the first missing repository, commit or blob, or None when all are there."""
        seen: set[tuple[str, str]] = set()
        for s in sources:
            if not s.repo:
                continue
            if not self.git_dir(s.repo).is_dir():
                return f"missing repository {s.repo}: no {self.git_dir(s.repo)} (fetch github:{s.repo})"
            if (s.repo, s.commit) not in seen:
                seen.add((s.repo, s.commit))
                if self._git(s.repo, "cat-file", "-e", f"{s.commit}^{{commit}}").returncode:
                    return f"missing commit {s.commit} in {s.repo} under {self.root} (fetch github:{s.repo} again)"
            listed = self._git(s.repo, "ls-tree", s.commit, "--", s.path).stdout.decode()
            if s.blob not in listed.split():
                return f"{s.repo}@{s.commit[:12]}:{s.path} is not blob {s.blob}"
            if self._git(s.repo, "cat-file", "-e", s.blob).returncode:
                return f"missing blob {s.blob} ({s.repo}:{s.path}) under {self.root}"
        return None

    def read(self, s: Source) -> bytes:
        """The bytes of the source's blob."""
        r = self._git(s.repo, "cat-file", "blob", s.blob)
        if r.returncode:
            raise RuntimeError(f"cannot read {s.repo}:{s.path}: {r.stderr.decode().strip()}")
        return r.stdout


class DebStore:
    """Reads members of pinned Debian packages (.deb files in one folder)."""

    def __init__(self, root: Path, debs: dict[str, dict]) -> None:
        """Remember the folder and the pinned packages (package -> file, version, sha256)."""
        self.root = root
        self.debs = debs
        self._cache: tuple[str, dict[str, bytes]] | None = None

    def check(self, sources: list[Source]) -> str | None:
        """One line naming the first missing or changed package, or None when all are there."""
        for pkg in sorted({s.deb for s in sources if s.deb}):
            info = self.debs.get(pkg)
            if info is None:
                return f"package {pkg} is not pinned in the sources file"
            path = self.root / info["file"]
            if not path.is_file():
                return f"missing {path} (cd {self.root} && apt-get download {pkg}={info['version']})"
            if hashlib.sha256(path.read_bytes()).hexdigest() != info["sha256"]:
                return f"{path} does not have the pinned sha256 {info['sha256']}"
        return None

    def _members(self, pkg: str) -> dict[str, bytes]:
        """All image members of a package's data archive (cached for the last package)."""
        if self._cache and self._cache[0] == pkg:
            return self._cache[1]
        data = (self.root / self.debs[pkg]["file"]).read_bytes()
        if data[:8] != b"!<arch>\n":
            raise RuntimeError(f"{pkg}: not a .deb (ar) file")
        pos, members = 8, {}
        while pos + 60 <= len(data):
            name = data[pos : pos + 16].decode().strip().rstrip("/")
            size = int(data[pos + 48 : pos + 58])
            body = data[pos + 60 : pos + 60 + size]
            pos += 60 + size + (size & 1)
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                    for m in tar.getmembers():
                        if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                            members[m.name.removeprefix("./")] = tar.extractfile(m).read()
        self._cache = (pkg, members)
        return members

    def read(self, s: Source) -> bytes:
        """The bytes of the source's member file."""
        members = self._members(s.deb)
        if s.path not in members:
            raise RuntimeError(f"{s.deb} has no member {s.path}")
        return members[s.path]


def load_sources(path: Path) -> tuple[list[Source], dict[str, dict], dict]:
    """The pinned sources, the pinned packages and the whole JSON document."""
    doc = json.loads(path.read_text())
    fields = Source.__dataclass_fields__
    sources = [Source(**{k: v for k, v in e.items() if k in fields}) for e in doc["sources"]]
    return sources, doc.get("debs", {}), doc


def decode_rgb(data: bytes) -> tuple[np.ndarray | None, str]:
    """(H, W, 3) uint8 pixels and the file format, or (None, why) when the image cannot be used."""
    Image.MAX_IMAGE_PIXELS = 300_000_000
    with Image.open(io.BytesIO(data)) as im:
        fmt = im.format or "?"
        if im.mode in ("RGB", "L"):
            return np.asarray(im.convert("RGB")), fmt
        if im.mode in ("RGBA", "LA", "P", "PA"):
            rgba = np.asarray(im.convert("RGBA"))
            if (rgba[..., 3] != 255).any():
                return None, "has transparent pixels"
            return np.ascontiguousarray(rgba[..., :3]), fmt
        return None, f"unsupported mode: {im.mode}"


def output_name(s: Source) -> str:
    """<set>/<slug>-<8 hex>.png for a source (slug from the file name, or its folder for WxH names)."""
    parts = s.path.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    if re.fullmatch(r"\d+x\d+", stem):
        stem = parts[0]
    slug = "-".join(re.findall(r"[a-z0-9]+", stem.lower()))[:40].strip("-") or "photo"
    return f"{s.set}/{slug}-{(s.blob or s.sha256)[:8]}.png"


def write_tsv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Write rows as a tab-separated file with a header line (atomically)."""
    tmp = path.with_suffix(".tmp")
    lines = ["\t".join(columns)] + ["\t".join(str(r.get(c, "")) for c in columns) for r in rows]
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def read_tsv(path: Path) -> list[dict]:
    """Rows of a tab-separated file with a header line ([] if it is not there)."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


def config_digest(doc: dict, args: argparse.Namespace) -> str:
    """Hash of this script, the pinned sources and the options: outputs are reused only when it matches."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(json.dumps([doc["sources"], doc.get("debs", {})], sort_keys=True).encode())
    h.update(json.dumps([args.target_short, args.min_short, args.grid_threshold, args.limit]).encode())
    return h.hexdigest()


def percentiles(values: list[float]) -> dict:
    """min, median, 90th percentile and max of a list (empty dict for none)."""
    if not values:
        return {}
    v = np.asarray(values, dtype=np.float64)
    return {k: round(float(np.percentile(v, q)), 4) for k, q in (("min", 0), ("median", 50), ("p90", 90), ("max", 100))}


def process(s: Source, data: bytes, ref: str, args: argparse.Namespace, accepted: list[dict], out: Path) -> dict:
    """Refuse or convert one source; returns its manifest row (with 'reason' when refused)."""
    row: dict = {"set": s.set, "source_repo": s.origin, "source_path": s.path, "sha256_file": s.sha256}
    if hashlib.sha256(data).hexdigest() != s.sha256:
        return row | {"reason": "file does not have the pinned sha256"}
    rgb, fmt = decode_rgb(data)
    if rgb is None:
        return row | {"reason": fmt}
    h, w = rgb.shape[:2]
    src_score = grid_score(rgb)
    row |= {"size": f"{w}x{h}", "bytes": len(data), "jpeg_grid_score": f"{src_score:.4f}"}
    why = match_test_image(s.path, rgb)
    if why:
        return row | {"reason": why}
    sha = pixel_sha256(rgb)
    fp = fingerprint(rgb)
    for a in accepted:
        if a["sha256_pixels_rgb"] == sha:
            return row | {"reason": f"duplicate: same pixels as {a['file']}"}
        aw, ah = (int(x) for x in a["size"].split("x"))
        if abs(math.log((w / h) / (aw / ah))) < ASPECT_TOL:
            d = fp_distance(fp, decode_fingerprint(a["thumb8"]))
            if d < NEAR_DUP:
                return row | {"reason": f"duplicate: near-duplicate of {a['file']} (thumbnail distance {d:.2f})"}
    factors = candidate_factors(h, w, args.target_short, args.min_short)
    if not factors:
        return row | {"reason": f"too small: short side {min(h, w)} // 2 < {args.min_short}"}
    tried = []
    for f in factors:
        small = box_downscale(rgb, f)
        out_score = output_grid_score(small, f)
        if out_score <= args.grid_threshold:
            break
        tried.append((out_score, f))
    else:
        best, bf = min(tried)
        return row | {
            "reason": f"JPEG grid left at every factor: best {best:.4f} (f={bf}) of {factors} > {args.grid_threshold}"
        }
    name = output_name(s)
    target = out / name
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small, "RGB").save(target, format="PNG", compress_level=9)
    png = target.read_bytes()
    return row | {
        "file": name,
        "sha256_pixels_rgb": sha,
        "source_git_blob": s.blob or "-",
        "source_commit": ref,
        "licence": s.licence,
        "factor": f,
        "out_size": f"{small.shape[1]}x{small.shape[0]}",
        "out_bytes": len(png),
        "out_sha256_file": hashlib.sha256(png).hexdigest(),
        "out_sha256_pixels": pixel_sha256(small),
        "out_grid_score": f"{out_score:.4f}",
        "thumb8": encode_fingerprint(fp),
        "note": s.note,
    }


def source_key(row: dict) -> tuple[str, str, str]:
    """What identifies a source in a manifest row."""
    return row["source_repo"], row["source_path"], row["sha256_file"]


def run(args: argparse.Namespace) -> dict:
    """Build (or complete) the output folder; returns the summary."""
    sources_file = Path(args.sources)
    sources, debs, doc = load_sources(sources_file)
    if args.limit:
        sources = sources[: args.limit]
    git, store = GitMirror(Path(args.mirror)), DebStore(Path(args.debs), debs)
    problem = git.check(sources) or store.check(sources)
    if problem:
        raise SystemExit(f"photo_data: {problem}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = config_digest(doc, args)
    old: dict[tuple, dict] = {}
    old_summary = out / "summary.json"
    if old_summary.is_file() and json.loads(old_summary.read_text()).get("config") == config:
        for r in read_tsv(out / "MANIFEST.tsv") + read_tsv(out / "REFUSED.tsv"):
            old[source_key(r)] = r
    accepted: list[dict] = []
    refused: list[dict] = []
    reused = 0
    t0 = time.time()
    for i, s in enumerate(sources):
        prev = old.get((s.origin, s.path, s.sha256))
        if prev and "reason" in prev:
            refused.append(prev)
            reused += 1
            continue
        if prev and (out / prev["file"]).is_file():
            if hashlib.sha256((out / prev["file"]).read_bytes()).hexdigest() == prev["out_sha256_file"]:
                accepted.append(prev)
                reused += 1
                continue
        data = git.read(s) if s.repo else store.read(s)
        ref = s.commit or f"{debs[s.deb]['file']} sha256:{debs[s.deb]['sha256']}"
        row = process(s, data, ref, args, accepted, out)
        (refused if "reason" in row else accepted).append(row)
        if not args.quiet:
            what = row.get("reason") or f"{row['out_size']} f={row['factor']} grid {row['out_grid_score']}"
            print(f"[{i + 1}/{len(sources)}] {s.set} {s.path}: {what}", flush=True)
        write_tsv(out / "MANIFEST.tsv", MANIFEST_COLUMNS, accepted)
        write_tsv(out / "REFUSED.tsv", REFUSED_COLUMNS, refused)
    write_tsv(out / "MANIFEST.tsv", MANIFEST_COLUMNS, accepted)
    write_tsv(out / "REFUSED.tsv", REFUSED_COLUMNS, refused)
    keep = {r["file"] for r in accepted}
    stale = [p for p in sorted(out.glob("*/*.png")) if p.relative_to(out).as_posix() not in keep]
    for p in stale:  # outputs of an earlier run that this one did not write
        p.unlink()
    summary = summarize(accepted, refused, doc, args, config)
    summary |= {"reused": reused, "stale_removed": len(stale), "seconds": round(time.time() - t0, 1)}
    old_summary.write_text(json.dumps(summary, indent=1) + "\n")
    (out / "SUMMARY.md").write_text(summary_markdown(summary))
    return summary


def summarize(accepted: list[dict], refused: list[dict], doc: dict, args: argparse.Namespace, config: str) -> dict:
    """Counts, pixels, bytes, score distributions and the output digest."""
    digest = hashlib.sha256("".join(f"{r['file']}\t{r['out_sha256_pixels']}\n" for r in accepted).encode())
    reasons: dict[str, int] = {}
    for r in refused:
        key = r["reason"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    per_set: dict[str, dict] = {}
    for r in accepted:
        d = per_set.setdefault(r["set"], {"images": 0, "pixels": 0})
        d["images"] += 1
        w, h = (int(x) for x in r["out_size"].split("x"))
        d["pixels"] += w * h
    pixels = sum(d["pixels"] for d in per_set.values())
    expected = doc.get("expected_digest")
    return {
        "config": config,
        "sources": len(accepted) + len(refused),
        "written": len(accepted),
        "refused": len(refused),
        "refused_by_reason": dict(sorted(reasons.items())),
        "per_set": dict(sorted(per_set.items())),
        "out_pixels": pixels,
        "out_bytes": sum(int(r["out_bytes"]) for r in accepted),
        "factors": {
            str(f): sum(1 for r in accepted if int(r["factor"]) == f)
            for f in sorted({int(r["factor"]) for r in accepted})
        },
        "grid_threshold": args.grid_threshold,
        "source_grid_score": percentiles([float(r["jpeg_grid_score"]) for r in accepted]),
        "out_grid_score": percentiles([float(r["out_grid_score"]) for r in accepted]),
        "refused_source_grid_score": percentiles(
            [float(r["jpeg_grid_score"]) for r in refused if r.get("jpeg_grid_score")]
        ),
        "target_short": args.target_short,
        "min_short": args.min_short,
        "digest": digest.hexdigest(),
        "expected_digest": expected,
        "digest_matches": None if expected is None else expected == digest.hexdigest(),
        "versions": {
            "numpy": np.__version__,
            "pillow": Image.__version__,
            "libjpeg": features.version("jpg"),
            "libjpeg_turbo": features.version("libjpeg_turbo"),
            "zlib": features.version("zlib"),
        },
    }


def summary_markdown(s: dict) -> str:
    """A short human-readable SUMMARY.md."""
    lines = [
        "# Extra photo training data (benchmarks/photo_data.py)",
        "",
        f"Sources {s['sources']}: written {s['written']}, refused {s['refused']}.",
        f"Output: {s['out_pixels']:,} pixels ({s['out_pixels'] / 1e6:.1f} Mpx), {s['out_bytes'] / 1e6:.1f} MB of PNG.",
        f"Downscale factors: {s['factors']}; target short side {s['target_short']}, minimum {s['min_short']}.",
        f"Grid score threshold {s['grid_threshold']}; sources {s['source_grid_score']}; outputs {s['out_grid_score']}.",
        f"Digest of output pixels: {s['digest']} (pinned: {s['expected_digest']}, match: {s['digest_matches']}).",
        "",
        "| set | images | Mpx |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v['images']} | {v['pixels'] / 1e6:.1f} |" for k, v in s["per_set"].items()]
    lines += ["", "Refused, by reason:", ""] + [f"- {k}: {v}" for k, v in s["refused_by_reason"].items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default runs/photos-extra)")
    p.add_argument("--mirror", default=str(DEFAULT_MIRROR), help="folder of bare git repositories")
    p.add_argument("--debs", default=str(DEFAULT_DEBS), help="folder of the pinned .deb files")
    p.add_argument("--sources", default=str(DEFAULT_SOURCES), help="pinned source list (JSON)")
    p.add_argument("--target-short", type=int, default=512, help="aim for at least this short side")
    p.add_argument("--min-short", type=int, default=256, help="refuse outputs with a shorter short side")
    p.add_argument("--grid-threshold", type=float, default=GRID_THRESHOLD, help="refuse outputs above this")
    p.add_argument("--limit", type=int, default=0, help="only the first N sources (0: all)")
    p.add_argument("--quiet", action="store_true", help="no line per source")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run and print the summary's main numbers."""
    s = run(parse_args(argv))
    print(
        f"written {s['written']} of {s['sources']}, refused {s['refused']} {s['refused_by_reason']}; "
        f"{s['out_pixels'] / 1e6:.1f} Mpx, {s['out_bytes'] / 1e6:.1f} MB; digest {s['digest'][:16]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
