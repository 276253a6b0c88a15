"""Make docs/before-after.png: the example photo beside its 8- and 32-colour versions.

Run: python scripts/make_readme_figure.py
"""

from pathlib import Path

from PIL import Image, ImageDraw

import clyde

root = Path(__file__).resolve().parents[1]
img = clyde.load_image(root / "examples" / "chelsea.png").array
panels = [("original", img)]
for k in (8, 32):
    res = clyde.quantize_pixels(img, k, seed=0)
    q = clyde.image_quality(img, res.image)
    panels.append((f"k={k}, PSNR {q.psnr:.1f} dB", res.image))
h, w = img.shape[:2]
canvas = Image.new("RGB", (w * len(panels) + 8 * (len(panels) - 1), h + 22), "white")
draw = ImageDraw.Draw(canvas)
for i, (label, a) in enumerate(panels):
    canvas.paste(Image.fromarray(a), (i * (w + 8), 22))
    draw.text((i * (w + 8) + 4, 5), label, fill="black")
canvas.save(root / "docs" / "before-after.png", optimize=True)
print("wrote docs/before-after.png")
