"""UTKFace crops (https://susanqq.github.io/UTKFace/) -> Handout C's faces and ages files, for 06_faces.py.

    python -m tools.utkface UTKFace/ --faces data/faces23k_48x48.npy.gz --ages data/ages23k.npy [--rgb]

Every AGE_GENDER_RACE_DATE.jpg (or .jpg.chip.jpg) under the folder, in name order, is centre-cropped to a square and
resized to 48×48, grayscale unless --rgb: faces uint8 (N, 48, 48[, 3]) and ages int64 (N,), each written atomically
(gzipped when the name ends in .gz). Other files and unreadable images are skipped and counted. The default names
are the course files': a file that is there already is replaced only with --overwrite.
"""
import gzip
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from common.cli import make_parser
from common.data import FACE_SIZE
from common.run import fail, write_bytes

NAME = re.compile(r"^(\d+)_.*\.(jpe?g|png)$", re.IGNORECASE)   # the age is the name's first number


def parse_args(argv):
    p = make_parser(__doc__)
    p.add_argument("folder", help="the UTKFace folder (searched recursively)")
    p.add_argument("--faces", default="data/faces23k_48x48.npy.gz", help="faces file to write (.npy or .npy.gz)")
    p.add_argument("--ages", default="data/ages23k.npy", help="ages file to write (.npy)")
    p.add_argument("--rgb", action="store_true", help="keep colour (default: grayscale, like the course file)")
    p.add_argument("--overwrite", action="store_true", help="replace --faces and --ages if they are there already")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not Path(args.folder).is_dir():
        fail(f"{args.folder} is not a folder (expected UTKFace's AGE_GENDER_RACE_DATE.jpg files)")
    there = [path for path in (args.faces, args.ages) if Path(path).exists()]
    if there and not args.overwrite:
        fail(f"{' and '.join(there)} {'is' if len(there) == 1 else 'are'} there already: add --overwrite to replace "
             f"{'it' if len(there) == 1 else 'them'}, or name other files with --faces and --ages")
    paths = sorted(f for f in Path(args.folder).rglob("*") if f.is_file())
    faces, ages = [], []
    for path in [f for f in paths if NAME.match(f.name)]:
        try:
            with Image.open(path) as im:   # centre crop to a square, then 48×48
                im = ImageOps.fit(im.convert("RGB" if args.rgb else "L"), (FACE_SIZE, FACE_SIZE), Image.BICUBIC)
        except OSError:   # truncated, or not an image
            continue
        faces.append(np.asarray(im, dtype=np.uint8))
        ages.append(int(NAME.match(path.name).group(1)))
    skipped = len(paths) - len(faces)   # other files and unreadable images
    if not faces:
        fail(f"{args.folder}: no readable AGE_GENDER_RACE_DATE.jpg images found")
    try:   # np.save's bytes, gzipped when the name ends in .gz, written atomically
        for array, path in ((np.stack(faces), args.faces), (np.array(ages, dtype=np.int64), args.ages)):
            buffer = io.BytesIO()
            np.save(buffer, array)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_bytes(gzip.compress(buffer.getvalue()) if path.endswith(".gz") else buffer.getvalue(), path)
    except OSError as e:   # no permission, a read-only disk, a parent that is a file
        fail(f"cannot write {args.faces} or {args.ages} ({e.strerror}); name files you can write")
    print(f"converted {len(faces)} faces into {args.faces} and {args.ages} ({skipped} files skipped)")
    return {"converted": len(faces), "skipped": skipped}


if __name__ == "__main__":
    main()
