"""Writing rollout videos (mp4 via imageio-ffmpeg, which ships its own ffmpeg binary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def mark_frame(frame: np.ndarray, text: str = "", color: tuple[int, int, int] | None = None) -> np.ndarray:
    """A copy of `frame` with a coloured border (e.g. green = success, red = failure) and a caption."""
    out = np.array(frame, copy=True)
    if color is not None:
        b = max(2, out.shape[0] // 60)
        out[:b], out[-b:], out[:, :b], out[:, -b:] = color, color, color, color
    if text:
        from PIL import Image, ImageDraw

        img = Image.fromarray(out)
        ImageDraw.Draw(img).text((6, 4), text, fill=(255, 255, 255) if color is None else color)
        out = np.asarray(img)
    return out


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 20.0) -> Path:
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    # macro_block_size=1 keeps odd frame sizes as they are instead of resizing with a warning
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=1) as w:
        for f in frames:
            w.append_data(np.asarray(f, np.uint8))
    return path
