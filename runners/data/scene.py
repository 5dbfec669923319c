"""The procedural street-scene renderer behind the built-in synthetic dataset.

A scene is ray-cast from a pinhole camera over a straight street (road with lane marks and
crossings, curbs, tiled sidewalks, grass verges, facades with window grids, tree walls,
low walls, fences, a far skyline, sky), then objects are drawn far to near with PIL
polygons, so nearer things occlude farther ones: poles carrying signs, traffic lights or
lamps, trees, parked and moving cars, trucks, buses, pedestrians, cyclists, bicycles, bins
(void) and sometimes the recording car's bonnet (void).

Colours of different classes overlap on purpose (grey road, sidewalk, cars, poles and
overcast sky; green trees and grass), and exposure, colour temperature, shadows, haze and
sensor noise vary per image, so a network needs texture, shape and position -- local detail
and global context -- rather than a colour lookup.

World coordinates are metres: X to the right (0 = street centre), h up from the road,
z forward from the camera. Everything is drawn into three images at once: labelIds, a
material index (colour and texture strength) and depth (for haze).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from runners.data.labels import LABEL_ID

# labelIds, taken from the cityscapesscripts table.
_ID = {
    name: LABEL_ID[name]
    for name in (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "bicycle", "ego vehicle", "static",
    )
}  # fmt: skip


@dataclass
class _Materials:
    """Per-image material table: a base colour and texture strengths at three scales."""

    colors: list[tuple[float, float, float]] = field(default_factory=list)
    amps: list[tuple[float, float, float]] = field(default_factory=list)  # fine, mid, coarse

    def add(
        self, rgb: np.ndarray, fine: float = 0.03, mid: float = 0.0, coarse: float = 0.03
    ) -> int:
        """Register a material; returns its index in the material image."""
        r, g, b = (min(max(float(c), 0.0), 255.0) for c in rgb)
        self.colors.append((r, g, b))
        self.amps.append((fine, mid, coarse))
        return len(self.colors) - 1


@dataclass(frozen=True)
class _Camera:
    f: float  # focal length in pixels
    x_v: float  # vanishing point column
    y_h: float  # horizon row
    cam_h: float  # camera height above the road in metres
    cam_x: float  # lateral camera position in metres (0 = street centre)

    def project(self, x_m: float, h_m: float, z_m: float) -> tuple[float, float]:
        s = self.f / z_m
        return self.x_v + (x_m - self.cam_x) * s, self.y_h + (self.cam_h - h_m) * s


class _Canvas:
    """Draws shapes given in world metres into the label, material and depth images."""

    def __init__(
        self, cam: _Camera, labels: np.ndarray, materials: np.ndarray, depth: np.ndarray
    ) -> None:
        self.cam = cam
        self.images = [Image.fromarray(labels), Image.fromarray(materials), Image.fromarray(depth)]
        self._draws = [ImageDraw.Draw(im) for im in self.images]

    def polygon_px(
        self, pts: Sequence[tuple[float, float]], label: int, mat: int, z: float
    ) -> None:
        for draw, value in zip(self._draws, (label, mat, z)):
            draw.polygon(list(pts), fill=value)

    def poly(self, pts: Sequence[tuple[float, float]], z: float, label: int, mat: int) -> None:
        """A polygon of (X, h) points in the frontal plane at depth z."""
        self.polygon_px([self.cam.project(x, h, z) for x, h in pts], label, mat, z)

    def quad(
        self, x0: float, x1: float, h0: float, h1: float, z: float, label: int, mat: int,
        inset: float = 0.0,
    ) -> None:  # fmt: skip
        """A frontal rectangle; ``inset`` narrows (or, negative, widens) its top edge."""
        self.poly([(x0, h0), (x0 + inset, h1), (x1 - inset, h1), (x1, h0)], z, label, mat)

    def side(
        self, x: float, z0: float, z1: float, h0: float, h1: float, label: int, mat: int,
        inset: tuple[float, float] = (0.0, 0.0),
    ) -> None:  # fmt: skip
        """A quad in the plane X = x from depth z0 to z1 (a vehicle's flank); ``inset``
        shortens its top edge at both ends."""
        p = self.cam.project
        pts = [p(x, h0, z0), p(x, h1, z0 + inset[0]), p(x, h1, z1 - inset[1]), p(x, h0, z1)]
        self.polygon_px(pts, label, mat, z1)

    def disc(
        self, x: float, h: float, z: float, r: float, label: int, mat: int,
        squash: float = 1.0, ring: float = 0.0,
    ) -> None:  # fmt: skip
        """A frontal ellipse of radius r (width squashed by ``squash``); a ring when ``ring``
        (its line width in metres) is set."""
        cx, cy = self.cam.project(x, h, z)
        ry = r * self.cam.f / z
        rx = max(0.5, ry * squash)
        box = (cx - rx, cy - ry, cx + max(rx, 1.0), cy + max(ry, 1.0))
        width = max(1, round(ring * self.cam.f / z)) if ring else 0
        for draw, value in zip(self._draws, (label, mat, z)):
            if width:
                draw.ellipse(box, outline=value, width=width)
            else:
                draw.ellipse(box, fill=value)

    def line(
        self, pts: Sequence[tuple[float, float]], z: float, width: float, label: int, mat: int
    ) -> None:
        """A polyline of (X, h) points at depth z, ``width`` metres wide (at least 1 px)."""
        px = [self.cam.project(x, h, z) for x, h in pts]
        w = max(1, round(width * self.cam.f / z))
        for draw, value in zip(self._draws, (label, mat, z)):
            draw.line(px, fill=value, width=w)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lab, mat, dep = (np.asarray(im) for im in self.images)
        return lab, mat, dep


def _grey(rng: np.random.Generator, lo: float, hi: float, tint: float = 5.0) -> np.ndarray:
    return rng.uniform(lo, hi) + rng.normal(0.0, tint, 3)


def _paint(rng: np.random.Generator) -> np.ndarray:
    """A vehicle or clothing colour: mostly greys, black and white, some saturated."""
    kind = rng.choice(6, p=[0.3, 0.15, 0.15, 0.15, 0.15, 0.1])
    if kind == 0:
        return _grey(rng, 70, 180)
    if kind == 1:
        return _grey(rng, 15, 50)
    if kind == 2:
        return _grey(rng, 190, 240)
    return rng.uniform(20, 220, 3)


def _building_colour(rng: np.random.Generator) -> np.ndarray:
    kind = rng.choice(4)
    if kind == 0:
        return _grey(rng, 60, 200)
    if kind == 1:  # beige / sandstone
        return np.array([rng.uniform(160, 220), rng.uniform(140, 200), rng.uniform(110, 170)])
    if kind == 2:  # brick
        return np.array([rng.uniform(110, 170), rng.uniform(55, 95), rng.uniform(45, 80)])
    return rng.uniform(120, 220, 3)  # painted plaster


def _green(rng: np.random.Generator, dry: bool = False) -> np.ndarray:
    if dry:  # grass and soil: overlaps dark foliage on purpose
        return np.array([rng.uniform(70, 150), rng.uniform(90, 160), rng.uniform(40, 95)])
    return np.array([rng.uniform(30, 100), rng.uniform(60, 135), rng.uniform(20, 75)])


_BUILDING, _TREES, _WALL = 0, 1, 2


@dataclass(frozen=True)
class _Segments:
    """Stretches of one side of the street along the depth axis z (metres)."""

    start: np.ndarray  # z where each segment begins, increasing
    kind: np.ndarray  # _BUILDING / _TREES / _WALL
    top: np.ndarray  # height of the facade in metres
    mat: np.ndarray  # main material
    wall_h: np.ndarray  # low wall height (_WALL segments)
    wall_mat: np.ndarray
    floor_h: np.ndarray  # window grid: storey height and column spacing (metres)
    col_w: np.ndarray
    win_w: np.ndarray  # window size as a fraction of the grid cell
    win_h: np.ndarray
    fence_h: np.ndarray  # 0 = no fence in front of this segment
    verge_terrain: np.ndarray  # grass (True) or paving (False) between sidewalk and facade

    def lookup(self, z: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.start, z, side="right") - 1, 0, len(self.start) - 1)


def _make_segments(rng: np.random.Generator, mats: _Materials, far: bool) -> _Segments:
    rows: list[tuple] = []
    z = rng.uniform(-15.0, 2.0)
    while z < 600.0:
        length = rng.uniform(8.0, 30.0) * (1.0 + max(z, 0.0) / 120.0)
        if far:
            kind = _BUILDING if rng.random() < 0.8 else _TREES
        else:
            kind = rng.choice(3, p=[0.55, 0.28, 0.17])
        if kind == _BUILDING:
            top = rng.uniform(12.0, 45.0) if far else rng.uniform(6.0, 28.0)
            mat = mats.add(_building_colour(rng), fine=0.025, coarse=0.04)
        else:
            top = rng.uniform(4.0, 12.0) * (1.6 if far else 1.0)
            mat = mats.add(_green(rng), fine=0.2, mid=0.2, coarse=0.12)
        wall_h = rng.uniform(0.8, 2.5) if kind == _WALL else 0.0
        wall_mat = mats.add(_building_colour(rng) * 0.9, fine=0.05, coarse=0.05) if wall_h else 0
        fence = kind != _BUILDING and not far and rng.random() < 0.6
        rows.append(
            (
                z, kind, top, mat, wall_h, wall_mat,
                rng.uniform(2.8, 3.8), rng.uniform(1.6, 3.6),
                rng.uniform(0.3, 0.65) if rng.random() < 0.9 else 0.0,
                rng.uniform(0.35, 0.65),
                rng.uniform(0.9, 1.8) if fence else 0.0,
                kind != _BUILDING or rng.random() < 0.4,  # parks, front lawns
            )
        )  # fmt: skip
        z += length
    cols = list(zip(*rows))
    return _Segments(*(np.array(c) for c in cols))


@dataclass
class _Street:
    """Everything the ray caster needs, drawn once per image from the rng."""

    cam: _Camera
    road_half: float
    sidewalk: np.ndarray  # widths, [left, right]
    verge: np.ndarray
    near: list[_Segments]  # [left, right]
    back: list[_Segments]
    back_gap: np.ndarray  # how far behind the facade the skyline stands
    mats: _Materials
    m: dict[str, int]  # named shared materials
    lanes: int
    dash: float
    crossing: tuple[float, float] | None  # (z start, length) of a zebra crossing
    shadow_side: int  # -1 left, +1 right, 0 none: the sun-shadowed half of the street
    shadow_edge: float
    glass: np.ndarray  # 1024 glass materials, picked per window by a hash of its grid cell


def _make_street(rng: np.random.Generator, height: int, width: int) -> _Street:
    cam = _Camera(
        f=width * rng.uniform(0.8, 1.15),
        x_v=width * rng.uniform(0.38, 0.62),
        y_h=height * rng.uniform(0.34, 0.5),
        cam_h=rng.uniform(1.25, 1.8),
        cam_x=0.0,
    )
    road_half = rng.uniform(3.5, 8.0)
    cam = _Camera(cam.f, cam.x_v, cam.y_h, cam.cam_h, rng.uniform(-0.55, 0.55) * road_half)
    mats = _Materials()
    asphalt = _grey(rng, 65, 135, tint=3.0)
    paving = asphalt + rng.uniform(-15.0, 45.0) + rng.normal(0.0, 6.0, 3)
    m = {
        "sky": mats.add(np.zeros(3), fine=0.005, coarse=0.05),  # colour comes from the gradient
        "road": mats.add(asphalt, fine=0.07, mid=0.03, coarse=0.06),
        "road_patch": mats.add(asphalt * rng.uniform(0.75, 0.9), fine=0.07, coarse=0.06),
        "paint": mats.add(_grey(rng, 185, 240, tint=2.0) * np.array([1.0, 1.0, rng.uniform(0.6, 1.0)]), fine=0.05),
        "paving": mats.add(paving, fine=0.04, mid=0.02, coarse=0.05),
        "joint": mats.add(paving * rng.uniform(0.7, 0.85), fine=0.04),
        "curb": mats.add(paving * rng.uniform(1.0, 1.25), fine=0.04),
        "grass": mats.add(_green(rng, dry=True), fine=0.15, mid=0.15, coarse=0.15),
        "glass_dark": mats.add(_grey(rng, 20, 60, tint=6.0), fine=0.04),
        "glass_sky": mats.add(np.array([rng.uniform(90, 150), rng.uniform(120, 170), rng.uniform(150, 210)]), fine=0.04, coarse=0.08),
        "glass_lit": mats.add(np.array([rng.uniform(190, 240), rng.uniform(170, 215), rng.uniform(100, 160)]), fine=0.04),
        "fence": mats.add(_grey(rng, 60, 160) if rng.random() < 0.6 else np.array([130.0, 95, 60]) * rng.uniform(0.7, 1.2), fine=0.03, coarse=0.05),
    }  # fmt: skip
    near = [_make_segments(rng, mats, far=False) for _ in range(2)]
    back = [_make_segments(rng, mats, far=True) for _ in range(2)]
    lanes = max(1, round(2 * road_half / 3.4))
    crossing = (rng.uniform(6.0, 35.0), rng.uniform(3.0, 5.0)) if rng.random() < 0.3 else None
    return _Street(
        cam=cam,
        road_half=road_half,
        sidewalk=rng.uniform(1.8, 5.0, 2),
        verge=np.where(rng.random(2) < 0.75, rng.uniform(1.5, 6.0, 2), 0.0),
        near=near,
        back=back,
        back_gap=rng.uniform(12.0, 45.0, 2),
        mats=mats,
        m=m,
        lanes=lanes,
        dash=rng.uniform(6.0, 12.0),
        crossing=crossing,
        shadow_side=int(rng.choice([-1, 0, 1])),
        shadow_edge=rng.uniform(-0.8, 0.8) * road_half,
        glass=rng.choice(
            [m["glass_dark"], m["glass_sky"], m["glass_lit"]], size=1024, p=[0.55, 0.35, 0.1]
        ),
    )


def _facade(
    st: _Street,
    segs: _Segments,
    plane_x: float,
    dx: np.ndarray,
    dy: np.ndarray,
    top_noise: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one vertical street-side plane X = plane_x.

    Returns (hit, label, material, depth per column, height at the plane): the plane's depth
    depends on the column only, which keeps the per-pixel work to a few array operations.
    """
    cam = st.cam
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (plane_x - cam.cam_x) / dx  # (1, W)
    valid = z > 0.3  # the plane is on this side of the camera
    z = np.where(valid, z, np.inf)
    zf = np.where(valid, z, 0.0)
    seg = segs.lookup(zf)
    h = cam.cam_h - dy * zf  # (H, W) height where the ray meets the plane
    kind = segs.kind[seg]
    top = segs.top[seg] + np.where(kind == _BUILDING, 0.0, top_noise)
    hit = valid & (h >= 0.0) & (h < top)

    label = np.where(kind == _BUILDING, _ID["building"], _ID["vegetation"])
    mat = np.broadcast_to(segs.mat[seg], h.shape)
    # Windows: a grid on the facade in metres.
    floor_h, col_w = segs.floor_h[seg], segs.col_w[seg]
    u = zf / col_w
    v = h / floor_h
    in_window = (
        (kind == _BUILDING)
        & (np.abs(u - np.floor(u) - 0.5) < segs.win_w[seg] / 2)
        & (np.abs(v - np.floor(v) - 0.5) < segs.win_h[seg] / 2)
        & (h > 0.5)
        & (h < top - 0.6)
    )
    cell = (np.floor(u).astype(np.int64) * 7919 + np.floor(v).astype(np.int64) * 104729) & 1023
    mat = np.where(in_window, st.glass[cell], mat)  # one random glass type per window
    in_wall = (kind == _WALL) & (h < segs.wall_h[seg])
    label = np.where(in_wall, _ID["wall"], label)
    mat = np.where(in_wall, segs.wall_mat[seg], mat)
    return hit, np.broadcast_to(label, h.shape), mat, z, h


def _static_scene(
    rng: np.random.Generator, st: _Street, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, materials, depth and a shading factor for road, sides, skyline and sky."""
    cam = st.cam
    dx = ((np.arange(width, dtype=np.float64) + 0.5 - cam.x_v) / cam.f)[None, :]
    dy = ((np.arange(height, dtype=np.float64) + 0.5 - cam.y_h) / cam.f)[:, None]
    labels = np.full((height, width), _ID["sky"], dtype=np.uint8)
    mats = np.full((height, width), st.m["sky"], dtype=np.int32)
    depth = np.full((height, width), np.inf, dtype=np.float32)
    shade = np.ones((height, width), dtype=np.float32)
    filled = np.zeros((height, width), dtype=bool)

    # Ground: road, lane marks, crossing, curb, sidewalk tiles, verge.
    with np.errstate(divide="ignore"):
        zg = np.where(dy > 0, cam.cam_h / np.maximum(dy, 1e-9), np.inf)  # (H, 1)
    ground = np.broadcast_to(dy > 0, (height, width))
    xg = cam.cam_x + dx * np.where(np.isfinite(zg), zg, 0.0)  # (H, W) metres
    ax = np.abs(xg)
    side = (xg > 0).astype(np.intp)  # 0 left, 1 right
    sw = st.sidewalk[side]
    lab_g = np.where(ax < st.road_half, _ID["road"], _ID["sidewalk"])
    mat_g = np.where(ax < st.road_half, st.m["road"], st.m["paving"])
    zgf = np.where(np.isfinite(zg), zg, 0.0)
    patch = np.sin(xg * 0.9 + 1.7 * np.sin(zgf * 0.11)) * np.sin(zgf * 0.23) > 0.55
    mat_g = np.where((ax < st.road_half) & patch, st.m["road_patch"], mat_g)
    lane_w = 2 * st.road_half / st.lanes
    rel = (xg + st.road_half) / lane_w
    near_line = np.abs(rel - np.round(rel)) * lane_w
    dashes = (zgf / st.dash) % 1.0 < 0.45
    inner = (np.round(rel) > 0) & (np.round(rel) < st.lanes)
    marks = (near_line < 0.08) & np.where(inner, dashes, True) & (ax < st.road_half)
    edge = np.abs(ax - (st.road_half - 0.35)) < 0.07
    marks |= edge
    if st.crossing is not None:
        z0, length = st.crossing
        marks |= (
            (zgf > z0) & (zgf < z0 + length) & ((xg / 0.9) % 1.0 < 0.5) & (ax < st.road_half - 0.3)
        )
    mat_g = np.where(marks, st.m["paint"], mat_g)
    tile = rng.uniform(0.3, 0.7)
    joints = ((xg / tile) % 1.0 < 0.08) | ((zgf / tile) % 1.0 < 0.08)
    walk = (ax >= st.road_half) & (ax < st.road_half + sw)
    mat_g = np.where(walk & joints, st.m["joint"], mat_g)
    mat_g = np.where((ax >= st.road_half) & (ax < st.road_half + 0.2), st.m["curb"], mat_g)
    verge = ax >= st.road_half + sw
    for s in (0, 1):
        grass = st.near[s].verge_terrain[st.near[s].lookup(zgf)]  # per row
        on = verge & (side == s) & grass
        lab_g = np.where(on, _ID["terrain"], lab_g)
        mat_g = np.where(on, st.m["grass"], mat_g)
    labels = np.where(ground, lab_g, labels)
    mats = np.where(ground, mat_g, mats)
    depth = np.where(ground, zg, depth).astype(np.float32)
    filled |= ground
    if st.shadow_side:
        shade = np.where(ground & (xg * st.shadow_side > st.shadow_edge), 0.62, shade)

    # Street sides, each over its own columns: the facade plane, the skyline behind it and
    # a fence in front of it.
    labels, mats = labels.astype(np.uint8), mats.astype(np.int32)
    middle = int(np.searchsorted(dx[0], 0.0))  # first column right of the vanishing point
    for s, sign, cols in ((0, -1.0, slice(0, middle)), (1, 1.0, slice(middle, width))):
        dxs = np.where(dx[:, cols] == 0, 1e-9, dx[:, cols])
        if dxs.size == 0:
            continue
        lab_s, mat_s, dep_s, shade_s = (
            labels[:, cols],
            mats[:, cols],
            depth[:, cols],
            shade[:, cols],
        )
        filled_s = filled[:, cols]
        plane = sign * (st.road_half + st.sidewalk[s] + st.verge[s])
        grid = np.arange(0.0, 700.0, 2.0)
        vals = rng.uniform(-1.5, 1.5, grid.size)
        for segs, x_plane, is_back in (
            (st.near[s], plane, False),
            (st.back[s], plane + sign * st.back_gap[s], True),
        ):
            z_col = (x_plane - cam.cam_x) / dxs
            noise = np.interp(np.where(z_col > 0, z_col, 0.0), grid, vals)
            hit, lab, mat, z, h = _facade(st, segs, x_plane, dxs, dy, noise)
            if is_back:
                hit &= ~filled_s
            lab_s[hit] = lab[hit]
            mat_s[hit] = mat[hit]
            dep_s[hit] = np.broadcast_to(z, hit.shape)[hit]
            if st.shadow_side == sign and not is_back:
                shade_s[hit & (h < 6.0)] = 0.7
            filled_s |= hit
        # Fence along the outer sidewalk edge, in front of parks and walls.
        x_f = sign * (st.road_half + st.sidewalk[s])
        z_f = (x_f - cam.cam_x) / dxs
        valid = z_f > 0.5
        z_f = np.where(valid, z_f, 0.0)
        fh = st.near[s].fence_h[st.near[s].lookup(z_f)]
        h_f = cam.cam_h - dy * z_f
        bars = ((z_f / 0.25) % 1.0 < 0.35) | (h_f > fh - 0.08) | (np.abs(h_f - 0.35 * fh) < 0.04)
        fence = valid & (fh > 0) & (h_f >= 0) & (h_f < fh) & bars
        lab_s[fence] = _ID["fence"]
        mat_s[fence] = st.m["fence"]
        dep_s[fence] = np.broadcast_to(z_f, fence.shape)[fence]
    return labels, mats, depth, shade


# Objects: each helper returns (depth, draw) pairs so all objects can be sorted far to near.
_Draw = Callable[[_Canvas], None]
_Items = list[tuple[float, _Draw]]

_VEHICLE_SIZE = {  # (width, length, height) ranges in metres
    "car": ((1.65, 1.95), (3.8, 4.8), (1.35, 1.6)),
    "truck": ((2.3, 2.55), (6.0, 9.0), (2.8, 3.6)),
    "bus": ((2.5, 2.55), (10.0, 13.0), (3.0, 3.3)),
}


def _vehicle(rng: np.random.Generator, st: _Street, x: float, z: float, kind: str) -> _Items:
    """A car, truck or bus seen from behind (or the front), with its camera-facing flank."""
    cam, mats = st.cam, st.mats
    w, length, hgt = (rng.uniform(lo, hi) for lo, hi in _VEHICLE_SIZE[kind])
    lab = _ID[kind]
    body = mats.add(_paint(rng), fine=0.02, coarse=0.03)
    dark = mats.add(_grey(rng, 10, 45), fine=0.03)
    glass = mats.add(_grey(rng, 25, 80) * np.array([0.9, 0.95, 1.05]), fine=0.03, coarse=0.05)
    lamp = mats.add(np.array([rng.uniform(150, 230), 20.0, 25.0]), fine=0.02)
    belt = rng.uniform(0.85, 1.0) if kind == "car" else hgt  # where a car's cabin starts
    right = x > cam.cam_x
    flank = x - w / 2 if right else x + w / 2
    inward = -1.0 if right else 1.0  # from the flank towards the vehicle's middle
    x0, x1 = x - w / 2, x + w / 2

    def draw(cv: _Canvas) -> None:
        z1 = z + length
        if abs(x - cam.cam_x) > w / 2:  # the flank is visible
            cv.side(flank, z, z1, 0.25, belt, lab, body)
            if kind == "car":
                cabin = flank + inward * 0.15
                cv.side(cabin, z + 0.9, z1 - 1.0, belt, hgt, lab, body, inset=(0.6, 0.7))
                cv.side(
                    cabin, z + 1.05, z1 - 1.15, belt + 0.05, hgt - 0.07, lab, glass, (0.55, 0.65)
                )
            else:  # a bus's window band, a truck's dark trim
                band = (0.55, 0.85) if kind == "bus" else (0.9, 0.95)
                cv.side(
                    flank,
                    z + 0.5,
                    z1 - 0.5,
                    hgt * band[0],
                    hgt * band[1],
                    lab,
                    glass if kind == "bus" else dark,
                )
            for zw in (z + 0.9, z1 - 0.9):
                cv.disc(flank, 0.33, zw, 0.33, lab, dark, squash=0.35)
        # The rear (or front) face, nearest to the camera.
        cv.quad(x0 + 0.05, x1 - 0.05, 0.0, 0.3, z, lab, dark)
        cv.quad(x0, x1, 0.3, belt, z, lab, body)
        if kind == "car":
            cv.quad(x0 + 0.07, x1 - 0.07, belt, hgt, z, lab, body, inset=0.18)
            cv.quad(x0 + 0.17, x1 - 0.17, belt + 0.05, hgt - 0.07, z, lab, glass, inset=0.13)
        else:
            cv.quad(
                x0 + 0.15,
                x1 - 0.15,
                hgt * 0.55,
                hgt * 0.85,
                z,
                lab,
                glass if kind == "bus" else body,
            )
        for lx in (x0 + 0.08, x1 - 0.33):
            cv.quad(lx, lx + 0.25, 0.65, 0.8, z, lab, lamp)
        cv.quad(
            x - 0.25, x + 0.25, 0.35, 0.47, z, lab, dark
        )  # plate: the vehicle's class in labelIds

    return [(z, draw)]


def _person(
    rng: np.random.Generator, st: _Street, x: float, z: float, rider: bool = False
) -> _Items:
    """A pedestrian (legs, torso, arms, head, maybe a bag), or a seated rider's upper body."""
    mats = st.mats
    hgt = rng.uniform(1.55, 1.95)
    lab = _ID["rider" if rider else "person"]
    pants = mats.add(_paint(rng) * 0.7, fine=0.04, coarse=0.04)
    shirt = mats.add(_paint(rng), fine=0.04, coarse=0.04)
    skin = mats.add(
        np.array([rng.uniform(90, 230), rng.uniform(60, 180), rng.uniform(40, 140)]), fine=0.03
    )
    stride = rng.uniform(0.0, 0.25)
    bag = rng.random() < 0.3
    b = 0.35 if rider else 0.0  # a rider sits above the pedals
    hip, shoulder = b + 0.5 * hgt, b + 0.82 * hgt

    def draw(cv: _Canvas) -> None:
        if rider:  # one bent leg towards the pedals
            knee = b + 0.2 * hgt
            cv.poly(
                [(x - 0.15, hip), (x - 0.05, knee), (x + 0.1, knee), (x + 0.1, hip)], z, lab, pants
            )
        else:
            for o in (-1, 1):
                lx = x + o * 0.09
                cv.poly([(lx - 0.07 + o * stride, b), (lx - 0.07, hip), (lx + 0.07, hip), (lx + 0.07 + o * stride, b)], z, lab, pants)  # fmt: skip
        cv.quad(x - 0.17, x + 0.17, hip - 0.01 * hgt, shoulder, z, lab, shirt, inset=-0.03)
        for o in (-1, 1):
            ax = x + o * 0.22
            cv.poly([(ax - 0.05, shoulder), (ax - 0.05 + o * 0.04, hip), (ax + 0.05 + o * 0.04, hip), (ax + 0.05, shoulder)], z, lab, shirt)  # fmt: skip
        cv.disc(x, b + 0.91 * hgt, z, 0.1, lab, skin, squash=0.85)
        if bag:
            cv.quad(x + 0.2, x + 0.38, b + 0.4 * hgt, b + 0.6 * hgt, z, lab, pants)

    return [(z, draw)]


def _bicycle(rng: np.random.Generator, st: _Street, x: float, z: float, ridden: bool) -> _Items:
    """A bicycle seen from the side (wheels, frame, bars); with a rider when ``ridden``."""
    frame = st.mats.add(_paint(rng), fine=0.03)
    tyre = st.mats.add(_grey(rng, 10, 40), fine=0.03)
    lab = _ID["bicycle"]
    f = 1.0 if rng.random() < 0.5 else -1.0  # facing right or left

    def draw(cv: _Canvas) -> None:
        for wx in (x - 0.55, x + 0.55):
            cv.disc(wx, 0.34, z, 0.34, lab, tyre, ring=0.06)
        rear, crank, seat, head = (
            (x - 0.55 * f, 0.34),
            (x - 0.1 * f, 0.34),
            (x - 0.2 * f, 0.85),
            (x + 0.4 * f, 0.8),
        )
        for pts in ([rear, crank, seat, rear], [crank, head, (x + 0.55 * f, 0.34)], [seat, head]):
            cv.line(pts, z, 0.05, lab, frame)
        cv.line([head, (x + 0.35 * f, 1.0), (x + 0.5 * f, 1.02)], z, 0.05, lab, frame)

    items: _Items = [(z + 0.01, draw)]
    if ridden:
        items += _person(rng, st, x - 0.1 * f, z - 0.01, rider=True)
    return items


def _pole(rng: np.random.Generator, st: _Street, x: float, z: float) -> _Items:
    """A pole carrying nothing, a traffic sign, a traffic light or a street lamp."""
    mats = st.mats
    hgt = rng.uniform(3.5, 8.0)
    wid = rng.uniform(0.1, 0.2)
    pole = mats.add(_grey(rng, 60, 175), fine=0.03, coarse=0.03)
    to_road = -1.0 if x > 0 else 1.0
    attach = rng.choice(["none", "sign", "light", "lamp"], p=[0.15, 0.4, 0.3, 0.15])
    shape = rng.choice(["circle", "triangle", "rectangle"])
    sign_h = rng.uniform(1.9, min(3.0, hgt - 0.3))
    sign_colours = [
        mats.add(np.array([rng.uniform(150, 230), 25.0, 30.0]), fine=0.03),
        mats.add(np.array([25.0, rng.uniform(60, 110), rng.uniform(140, 210)]), fine=0.03),
        mats.add(_grey(rng, 190, 240), fine=0.03),
        mats.add(np.array([rng.uniform(200, 240), rng.uniform(170, 210), 20.0]), fine=0.03),
    ]
    outer, inner = (sign_colours[i] for i in rng.choice(len(sign_colours), 2, replace=False))
    box = _grey(rng, 15, 60) if rng.random() < 0.7 else np.array([170.0, 140, 30])
    housing = mats.add(box, fine=0.03)
    lamps = [
        mats.add(np.array(c), fine=0.02) for c in ([220, 40, 30], [230, 160, 30], [40, 210, 90])
    ]
    dim = mats.add(_grey(rng, 30, 60), fine=0.02)
    lit = rng.integers(3)
    arm = rng.uniform(1.0, 4.0)
    zf = z - 0.02  # attachments sit in front of the pole

    def draw(cv: _Canvas) -> None:
        cv.quad(x - wid / 2, x + wid / 2, 0.0, hgt, z, _ID["pole"], pole)
        if attach == "sign":  # a plate with a border, in one of three shapes
            sx, sign = x + to_road * 0.35, _ID["traffic sign"]
            for r, colour in ((0.32, outer), (0.23, inner)):
                if shape == "circle":
                    cv.disc(sx, sign_h, zf, r, sign, colour)
                elif shape == "triangle":
                    cv.poly([(sx - r, sign_h - 0.6 * r), (sx, sign_h + 1.1 * r), (sx + r, sign_h - 0.6 * r)], zf, sign, colour)  # fmt: skip
                else:
                    cv.quad(sx - 1.2 * r, sx + 1.2 * r, sign_h - 0.7 * r, sign_h + 0.7 * r, zf, sign, colour)  # fmt: skip
        elif attach == "light":  # on the pole, or hanging from an arm over the road
            over = hgt > 5.0
            lx = x + to_road * (arm if over else 0.3)
            top = hgt - 0.2 if over else hgt - 1.0
            if over:
                cv.quad(min(x, lx), max(x, lx), hgt - 0.1, hgt, z, _ID["pole"], pole)
            cv.quad(lx - 0.17, lx + 0.17, top - 0.95, top, zf, _ID["traffic light"], housing)
            for i in range(3):
                colour = lamps[i] if i == lit else dim
                cv.disc(lx, top - 0.17 - 0.3 * i, zf, 0.11, _ID["traffic light"], colour)
        elif attach == "lamp":  # a street lamp: arm and head are part of the pole
            ex = x + to_road * arm
            cv.poly(
                [(x, hgt - 0.12), (x, hgt), (ex, hgt + 0.2), (ex, hgt + 0.08)], z, _ID["pole"], pole
            )
            cv.quad(ex - 0.3, ex + 0.3, hgt - 0.05, hgt + 0.12, z, _ID["pole"], pole, inset=0.05)

    return [(z, draw)]


def _tree(rng: np.random.Generator, st: _Street, x: float, z: float) -> _Items:
    """A trunk and an irregular crown, both vegetation as in gtFine."""
    trunk_h = rng.uniform(1.8, 3.2)
    radius = rng.uniform(1.2, 3.0)
    bark = np.array([rng.uniform(60, 110), rng.uniform(45, 80), rng.uniform(30, 60)])
    trunk = st.mats.add(bark, fine=0.08, coarse=0.05)
    crown = st.mats.add(_green(rng), fine=0.22, mid=0.22, coarse=0.12)
    angles = np.linspace(0, 2 * np.pi, 18, endpoint=False)
    radii = radius * (1.0 + 0.22 * rng.standard_normal(angles.size))
    cy = trunk_h + radius * 0.8
    outline = [(x + r * np.cos(a), cy + 0.85 * r * np.sin(a)) for a, r in zip(angles, radii)]

    def draw(cv: _Canvas) -> None:
        tw = 0.15 + 0.05 * radius
        cv.quad(
            x - tw, x + tw, 0.0, trunk_h + radius * 0.5, z, _ID["vegetation"], trunk, inset=0.3 * tw
        )
        cv.poly(outline, z, _ID["vegetation"], crown)

    return [(z, draw)]


def _bin(rng: np.random.Generator, st: _Street, x: float, z: float) -> _Items:
    """Street furniture that gtFine marks as void ("static"): ignored in training."""
    mat = st.mats.add(_paint(rng), fine=0.04)
    w, h = rng.uniform(0.4, 1.0), rng.uniform(0.6, 1.2)
    return [(z, lambda cv: cv.quad(x - w / 2, x + w / 2, 0.0, h, z, _ID["static"], mat))]


def _ego_hood(rng: np.random.Generator, st: _Street, height: int, width: int) -> _Items:
    """The recording car's bonnet at the bottom edge, void in gtFine ("ego vehicle")."""
    e = height * rng.uniform(0.05, 0.12)
    mat = st.mats.add(_paint(rng), fine=0.02)
    xs = np.linspace(0, width, 24)
    ys = height - e * (0.55 + 0.45 * np.cos((xs / width - 0.5) * np.pi))
    outline = [(0.0, float(height)), *zip(xs.tolist(), ys.tolist()), (float(width), float(height))]
    return [(0.0, lambda cv: cv.polygon_px(outline, _ID["ego vehicle"], mat, 1.0))]


def _objects(rng: np.random.Generator, st: _Street, height: int, width: int) -> _Items:
    """Place things along the street."""
    items: _Items = []
    rh = st.road_half
    for sign, s in ((-1.0, 0), (1.0, 1)):
        sw = st.sidewalk[s]
        z = rng.uniform(3.0, 18.0)  # poles along the curb
        spacing = rng.uniform(10.0, 28.0)
        while z < 120.0:
            items += _pole(rng, st, sign * (rh + rng.uniform(0.3, 0.7)), z)
            z += spacing * rng.uniform(0.7, 1.3)
        z = rng.uniform(4.0, 25.0)  # trees on the sidewalk or verge
        while z < 100.0 and rng.random() < 0.75:
            x = sign * (rh + sw * rng.uniform(0.55, 0.9) + st.verge[s] * 0.5)
            items += _tree(rng, st, x, z)
            z += rng.uniform(8.0, 25.0)
        for _ in range(rng.poisson(2.5)):  # pedestrians
            x = sign * (rh + rng.uniform(0.4, sw - 0.3))
            items += _person(rng, st, x, rng.uniform(3.0, 45.0))
        for _ in range(rng.poisson(0.6)):  # parked bicycles
            x = sign * (rh + rng.uniform(0.8, max(0.9, sw - 0.6)))
            items += _bicycle(rng, st, x, rng.uniform(4.0, 30.0), ridden=False)
        for _ in range(rng.poisson(0.5)):
            items += _bin(rng, st, sign * (rh + rng.uniform(0.3, sw)), rng.uniform(4.0, 40.0))
        z = rng.uniform(3.0, 15.0)  # parked cars along the curb
        while z < 80.0:
            if rng.random() < 0.55:
                items += _vehicle(rng, st, sign * (rh - 1.15), z, "car")
            z += rng.uniform(5.5, 14.0)
    lane_w = 2 * rh / st.lanes
    for lane in range(st.lanes):  # traffic
        z = rng.uniform(6.0, 30.0)
        while z < 110.0:
            kind = str(rng.choice(["car", "truck", "bus"], p=[0.84, 0.08, 0.08]))
            x = -rh + lane_w * (lane + 0.5) + rng.uniform(-0.3, 0.3)
            items += _vehicle(rng, st, x, z, kind)
            z += rng.uniform(12.0, 45.0)
    for _ in range(rng.poisson(0.8)):  # cyclists along the road edges
        x = (rh - rng.uniform(0.8, 1.6)) * (1 if rng.random() < 0.5 else -1)
        items += _bicycle(rng, st, x, rng.uniform(5.0, 35.0), ridden=True)
    if rng.random() < 0.35:
        items += _ego_hood(rng, st, height, width)
    return items


def _noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth Gaussian noise with features about ``cell`` pixels wide (PIL bilinear upsampling)."""
    if cell <= 1:
        return rng.standard_normal((height, width), dtype=np.float32)
    small = rng.standard_normal((height // cell + 2, width // cell + 2), dtype=np.float32)
    big = Image.fromarray(small).resize((width + 2 * cell, height + 2 * cell), Image.BILINEAR)
    return np.asarray(big)[cell : cell + height, cell : cell + width] * 1.4


def render_scene(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (RGB uint8 HxWx3, Cityscapes labelIds uint8 HxW)."""
    st = _make_street(rng, height, width)
    labels, mats, depth, shade = _static_scene(rng, st, height, width)
    first_object_mat = len(st.mats.colors)
    items = _objects(rng, st, height, width)
    canvas = _Canvas(st.cam, labels, mats, depth)
    for _, draw in sorted(items, key=lambda item: -item[0]):  # painter's algorithm
        draw(canvas)
    labels, mats, depth = canvas.arrays()
    shade = np.where(mats >= first_object_mat, np.float32(1.0), shade)

    # Colour: material colour with three scales of texture, then the sky gradient.
    f32 = np.float32
    colors = np.array(st.mats.colors, dtype=f32)
    amps = np.array(st.mats.amps, dtype=f32)
    texture = (
        amps[mats, 0] * _noise(rng, height, width, 1)
        + amps[mats, 1] * _noise(rng, height, width, 3)
        + amps[mats, 2] * _noise(rng, height, width, 14)
    )
    img = colors[mats] * ((1.0 + texture) * shade)[..., None]
    if rng.random() < 0.3:  # overcast: grey sky, close to pale facades
        top = _grey(rng, 150, 215, tint=4.0)
        horizon = top + rng.uniform(5, 30)
    else:
        top = np.array([rng.uniform(40, 120), rng.uniform(90, 160), rng.uniform(170, 240)])
        horizon = np.array([rng.uniform(150, 230), rng.uniform(170, 230), rng.uniform(190, 245)])
    top, horizon = top.astype(f32), horizon.astype(f32)
    rows = (np.arange(height, dtype=f32) + 0.5)[:, None]
    cols = (np.arange(width, dtype=f32) + 0.5)[None, :]
    t = (np.clip(rows / max(st.cam.y_h, 1.0), 0, 1) ** 0.7)[..., None]
    sky = (top * (1 - t) + horizon * t) * (1.0 + 0.08 * _noise(rng, height, width, 24))[..., None]
    is_sky = mats == st.m["sky"]
    img[is_sky] = sky[is_sky]
    # Haze: far things fade towards the horizon colour.
    haze_m = f32(rng.uniform(120.0, 600.0))
    haze = (1.0 - np.exp(-np.where(np.isfinite(depth), depth, f32(0)) / haze_m))[..., None]
    haze[is_sky] = 0.0
    img = img * (1 - haze) + horizon * haze

    # Lighting: exposure, contrast, colour temperature, a shadow band, vignette, sensor noise.
    temp = rng.uniform(-1.0, 1.0)
    img *= (rng.uniform(0.65, 1.3) * np.array([1 + 0.12 * temp, 1.0, 1 - 0.12 * temp])).astype(f32)
    mean = img.mean()
    img = (img - mean) * f32(rng.uniform(0.75, 1.25)) + mean
    light = np.ones((height, width), dtype=f32)
    if rng.random() < 0.6:  # a soft shadow band, e.g. from a building across the street
        angle = rng.uniform(0, np.pi)
        proj = (cols - width / 2) * f32(np.cos(angle)) + (rows - height / 2) * f32(np.sin(angle))
        centre, half = rng.uniform(-0.4, 0.4) * width, rng.uniform(0.05, 0.2) * width
        band = np.clip((half - np.abs(proj - f32(centre))) / f32(0.03 * width), 0, 1)
        light *= 1 - f32(rng.uniform(0.25, 0.45)) * band
    r2 = ((cols / width - 0.5) ** 2 + (rows / height - 0.5) ** 2) * 2
    light *= 1 - f32(rng.uniform(0.0, 0.35)) * r2
    img *= light[..., None]
    img += rng.standard_normal(img.shape, dtype=f32) * f32(rng.uniform(2.0, 7.0))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), labels.astype(np.uint8)
