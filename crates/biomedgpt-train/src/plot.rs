//! The loss curve as a PNG: training loss (blue) and validation loss (red, dots joined) against
//! the step, on a white canvas with axes and a tick per tenth of each axis. No text: the numbers
//! are in the metrics log next to it.

use std::path::Path;

const WIDTH: usize = 800;
const HEIGHT: usize = 480;
const MARGIN: usize = 40;

struct Canvas(Vec<u8>);

impl Canvas {
    fn new() -> Self {
        Canvas(vec![255; WIDTH * HEIGHT * 3])
    }

    fn dot(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            let at = (y as usize * WIDTH + x as usize) * 3;
            self.0[at..at + 3].copy_from_slice(&color);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: [u8; 3]) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for k in 0..=steps {
            let t = k as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
                self.dot(x.round() as i64 + dx, y.round() as i64 + dy, color);
            }
        }
    }
}

/// Writes the curves (`(step, loss)` points) to `path` (atomically).
pub fn loss_curve(path: &Path, train: &[(usize, f64)], valid: &[(usize, f64)]) -> std::io::Result<()> {
    let mut canvas = Canvas::new();
    let all = train.iter().chain(valid);
    let max_step = all.clone().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo.min(0.0), hi) } else { (0.0, 1.0) };
    let (plot_w, plot_h) = ((WIDTH - 2 * MARGIN) as f64, (HEIGHT - 2 * MARGIN) as f64);
    let to_px = |step: f64, loss: f64| (MARGIN as f64 + step / max_step * plot_w, MARGIN as f64 + (hi - loss) / (hi - lo) * plot_h);
    let black = [0, 0, 0];
    let origin = (MARGIN as f64, (HEIGHT - MARGIN) as f64);
    canvas.line(origin, ((WIDTH - MARGIN) as f64, origin.1), black);
    canvas.line(origin, (origin.0, MARGIN as f64), black);
    for k in 1..=10 {
        let x = MARGIN as f64 + plot_w * k as f64 / 10.0;
        canvas.line((x, origin.1), (x, origin.1 + 5.0), black);
        let y = origin.1 - plot_h * k as f64 / 10.0;
        canvas.line((origin.0 - 5.0, y), (origin.0, y), black);
    }
    for (points, color) in [(train, [31, 119, 180]), (valid, [214, 39, 40])] {
        for pair in points.windows(2) {
            canvas.line(to_px(pair[0].0 as f64, pair[0].1), to_px(pair[1].0 as f64, pair[1].1), color);
        }
        for p in points {
            let (x, y) = to_px(p.0 as f64, p.1);
            canvas.line((x - 2.0, y), (x + 2.0, y), color);
        }
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, WIDTH as u32, HEIGHT as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer.write_image_data(&canvas.0).map_err(std::io::Error::other)?;
    }
    biomedgpt_io::npy::write_atomic(path, &bytes)
}
