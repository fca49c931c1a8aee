// Tiles with a halo (both engines), and the sequential tile loop of the CUDA
// engine (header-only).  The CPU engine runs the same TileGrid with threads that
// take whole tiles (engine_cpu.cpp, "work split").
//
// An image of H x W pixels is cut into output tiles of `tile` x `tile` pixels
// (row-major; the last row / column of tiles is cut by the image). Each tile is
// computed from its region: the tile grown by the halo (the net's receptive
// radius, 1 + depth) and clipped to the image, so tiled output equals untiled
// output. for_each_tile runs the tiles in order, reports progress and cancels.
#pragma once

#include <algorithm>
#include <climits>
#include <cstddef>
#include <stdexcept>

#include "msrnet/model.h"

namespace msrnet {

struct Rect {  // half-open pixel rectangle [y0, y1) x [x0, x1)
    int y0 = 0, y1 = 0, x0 = 0, x1 = 0;
    int height() const { return y1 - y0; }
    int width() const { return x1 - x0; }
    bool empty() const { return y1 <= y0 || x1 <= x0; }
};

// r grown by `by` pixels on every side, clipped to [0, H) x [0, W).
inline Rect grow_clip(const Rect& r, int by, int H, int W) {
    return Rect{std::max(0, r.y0 - by), std::min(H, r.y1 + by), std::max(0, r.x0 - by),
                std::min(W, r.x1 + by)};
}

struct Tile {
    int index = 0;  // 0 .. TileGrid::count() - 1, row-major
    Rect out;       // output pixels, image coordinates
    Rect region;    // out grown by the halo, clipped to the image
};

class TileGrid {
public:
    // tile <= 0: the whole image is one tile. H, W >= 0; a grid of an empty image
    // has no tiles. Throws std::invalid_argument when the count would pass INT_MAX.
    TileGrid(int H, int W, int tile, int halo) : H_(H), W_(W), halo_(halo) {
        if (H < 0 || W < 0) throw std::invalid_argument("image size must be non-negative");
        if (halo < 0) throw std::invalid_argument("halo must be non-negative");
        th_ = tile > 0 ? std::min(tile, H) : H;
        tw_ = tile > 0 ? std::min(tile, W) : W;
        if (H == 0 || W == 0) return;
        ny_ = (H + th_ - 1) / th_;
        nx_ = (W + tw_ - 1) / tw_;
        if (static_cast<long long>(ny_) * nx_ > INT_MAX)
            throw std::invalid_argument("too many tiles (use a larger tile)");
    }

    int count() const { return ny_ * nx_; }

    Tile operator[](int i) const {
        Tile t;
        t.index = i;
        const int y0 = (i / nx_) * th_, x0 = (i % nx_) * tw_;
        t.out = Rect{y0, std::min(H_, y0 + th_), x0, std::min(W_, x0 + tw_)};
        t.region = grow_clip(t.out, halo_, H_, W_);
        return t;
    }

    // Upper bounds over all tiles, for buffers allocated once per run.
    size_t max_tile_pixels() const { return static_cast<size_t>(th_) * tw_; }
    size_t max_region_pixels() const {
        const long long rh = std::min<long long>(H_, th_ + 2LL * halo_);
        const long long rw = std::min<long long>(W_, tw_ + 2LL * halo_);
        return static_cast<size_t>(rh) * static_cast<size_t>(rw);
    }

private:
    int H_, W_, halo_, th_ = 0, tw_ = 0, ny_ = 0, nx_ = 0;
};

// Runs every tile of `grid` in order: begin(tile) starts it, end(tile) finishes
// it. With lookahead = 1 tile i + 1 is begun before tile i is ended (an engine
// that stages the next tile while the current one computes); 0 ends each tile
// right after beginning it. After each end, progress(done, total) (when set);
// false throws Cancelled. Exceptions from begin, end and progress propagate.
template <class Begin, class End>
void for_each_tile(const TileGrid& grid, const ProgressFn& progress, int lookahead, Begin&& begin,
                   End&& end) {
    const int total = grid.count();
    auto finish = [&](int j) {
        end(grid[j]);
        if (progress && !progress(j + 1, total)) throw Cancelled();
    };
    for (int i = 0; i < total; ++i) {
        begin(grid[i]);
        if (i >= lookahead) finish(i - lookahead);
    }
    for (int j = std::max(0, total - lookahead); j < total; ++j) finish(j);
}

// The plain loop: run(tile) computes a tile, then progress / cancel.
template <class Run>
void for_each_tile(const TileGrid& grid, const ProgressFn& progress, Run&& run) {
    for_each_tile(grid, progress, 0, run, [](const Tile&) {});
}

}  // namespace msrnet
