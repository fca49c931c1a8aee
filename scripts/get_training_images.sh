#!/usr/bin/env bash
# Reproducible, offline-on-Debian-12 training images for MSR-net.
#
# Source: photographs shipped in Debian 12 (bookworm) wallpaper packages plus the
# colour/gray photographs bundled inside scikit-image. No network access beyond
# the Debian archive is needed (run as root, or with IMAGES_NO_APT=1 if the
# packages are already installed).
#
#   plasma-workspace-wallpapers 4:5.27.5-2   (KDE, LGPL/CC-BY-SA)
#   mate-backgrounds            1.26.0-1     (nature/ folder: all photographs)
#   lomiri-wallpapers-16.04     20.04.0-2    (Ubuntu 16.04 community photo contest)
#   lomiri-wallpapers-20.04     20.04.0-2
#
# Selection rule: only PHOTOGRAPHS, chosen by eye from contact sheets and
# listed explicitly below. Excluded on purpose: vector art/renders (most of
# Plasma: Altai, Canopee, Flow, Kay, Opal, ...; all of gnome-backgrounds and
# ukui-wallpapers; mate abstract/ and desktop/), painterly images (Plasma
# Autumn, SafeLanding), 3D renders that look photographic (Peter Nerlich's
# free/greentock), texture/abstract photos (analogpattern, umang) and space art
# (Infinite-Sea). For KDE wallpapers the largest provided resolution is used.
# scikit-image: colour photos astronaut, chelsea, coffee, hubble_deep_field,
# ihc (immunohistochemistry), motorcycle_left, retina, rocket; gray photos
# camera, coins, moon, grass, gravel, brick (replicated to RGB).
#
# Processing: RGB (alpha dropped), downscaled with a Lanczos filter so the long
# side is <= 1024 px (no upscaling), saved as 8-bit PNG data/images/<src>_<name>.png.
#
# Split (data/splits.json): deterministic, whole images. Images are ordered by
# sha256("msrnet-split-v1:" + file name); the first round(0.15 * N) are the
# validation set and never used for training. Listing is recorded in the JSON.
#
# Usage: bash scripts/get_training_images.sh [DATA_DIR]   (default: data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${1:-data}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

if [ "${IMAGES_NO_APT:-0}" != "1" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    plasma-workspace-wallpapers mate-backgrounds \
    lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 >/dev/null
fi

mkdir -p "$DATA_DIR/images"
"$PY" - "$DATA_DIR" <<'PYEOF'
import glob, hashlib, json, os, re, sys

import numpy as np
from PIL import Image

data_dir = sys.argv[1]
out_dir = os.path.join(data_dir, "images")
MAX_SIDE = 1024
VAL_FRACTION = 0.15

PLASMA = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
          "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"]
MATE = ["Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
        "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower"]
LOMIRI = ["Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
          "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
          "friends_by_Aitzol_Berasategi", "life_by_Aitzol_Berasategi",
          "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
          "sunset_by_Aitzol_Berasategi", "Kleiber_by_Lukas_Baubkus"]
SKIMAGE = ["astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
           "motorcycle_left.png", "retina.jpg", "rocket.jpg",
           "camera.png", "coins.png", "moon.png", "grass.png", "gravel.png", "brick.png"]


def plasma_file(name):
    files = glob.glob(f"/usr/share/wallpapers/{name}/contents/images/*")
    def area(f):
        m = re.match(r"(\d+)x(\d+)", os.path.basename(f))
        return int(m.group(1)) * int(m.group(2)) if m else 0
    files = [f for f in files if area(f) > 0]
    if not files:
        raise FileNotFoundError(name)
    return max(files, key=lambda f: (area(f), f))


import skimage
sk_dir = os.path.join(os.path.dirname(skimage.__file__), "data")
sources = [("kde_" + n, plasma_file(n)) for n in PLASMA]
sources += [("mate_" + n, f"/usr/share/backgrounds/mate/nature/{n}.jpg") for n in MATE]
sources += [("lomiri_" + n.split("_by_")[0], f"/usr/share/backgrounds/{n}.jpg") for n in LOMIRI]
sources += [("skimage_" + os.path.splitext(n)[0], os.path.join(sk_dir, n)) for n in SKIMAGE]

names = []
for name, src in sources:
    dst = os.path.join(out_dir, name + ".png")
    im = Image.open(src)
    im.draft("RGB", (MAX_SIDE, MAX_SIDE))  # fast JPEG pre-shrink (never below target)
    im = im.convert("RGB")
    scale = MAX_SIDE / max(im.size)
    if scale < 1:
        size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
        im = im.resize(size, Image.LANCZOS)
    im.save(dst, optimize=False)
    names.append(name + ".png")
    print(f"{name:40s} {im.size[0]}x{im.size[1]}  <- {src}")

order = sorted(names, key=lambda n: hashlib.sha256(("msrnet-split-v1:" + n).encode()).hexdigest())
n_val = max(1, round(VAL_FRACTION * len(order)))
split = {
    "rule": "sha256('msrnet-split-v1:'+name) order, first round(0.15*N) = val",
    "val": sorted(order[:n_val]),
    "train": sorted(order[n_val:]),
}
with open(os.path.join(data_dir, "splits.json"), "w") as fh:
    json.dump(split, fh, indent=1)
print(f"{len(names)} images: {len(split['train'])} train, {len(split['val'])} val -> "
      f"{os.path.join(data_dir, 'splits.json')}")
print("val:", ", ".join(split["val"]))
PYEOF
