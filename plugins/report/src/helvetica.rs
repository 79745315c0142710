//! Helvetica as every PDF reader has it built in: its WinAnsi encoding and glyph widths, so
//! that text can be measured (to size columns and truncate cells) without embedding a font.

/// Advance widths of the printable ASCII characters (32..=126) in 1/1000 em, from Adobe's
/// font metrics for Helvetica.
const REGULAR: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, // ' '../
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, // 0..?
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, // @..O
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, // P.._
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, // `..o
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, // p..~
];

/// The same for Helvetica-Bold.
const BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, // ' '../
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, // 0..?
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778, // @..O
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, // P.._
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, // `..o
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, // p..~
];

/// The WinAnsi code of the ellipsis that marks a truncated cell.
pub const ELLIPSIS: u8 = 0x85;

/// Regular or bold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Regular,
    Bold,
}

/// `text` in WinAnsi (Windows-1252), the encoding the built-in fonts read: characters it lacks
/// become `?`, and control characters (a newline in a cell, say) a space.
pub fn encode(text: &str) -> Vec<u8> {
    text.chars().map(win_ansi).collect()
}

fn win_ansi(c: char) -> u8 {
    match c {
        // Printable ASCII, and Latin-1's upper half, which WinAnsi shares.
        ' '..='~' | '\u{a0}'..='\u{ff}' => u8::try_from(u32::from(c)).unwrap_or(b'?'),
        c if c.is_control() || c.is_whitespace() => b' ',
        '€' => 0x80,
        '‚' => 0x82,
        'ƒ' => 0x83,
        '„' => 0x84,
        '…' => ELLIPSIS,
        '†' => 0x86,
        '‡' => 0x87,
        'ˆ' => 0x88,
        '‰' => 0x89,
        'Š' => 0x8a,
        '‹' => 0x8b,
        'Œ' => 0x8c,
        'Ž' => 0x8e,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '˜' => 0x98,
        '™' => 0x99,
        'š' => 0x9a,
        '›' => 0x9b,
        'œ' => 0x9c,
        'ž' => 0x9e,
        'Ÿ' => 0x9f,
        _ => b'?',
    }
}

/// The advance width of one WinAnsi code, in 1/1000 em.
///
/// Exact for ASCII; outside it, an estimate at least as wide as the glyph for letters (accented
/// letters are as wide as their base letter, at most 778 for capitals) and the common symbols.
/// Cells are also clipped to their column, so an estimate can shorten a cell but never make
/// it overlap the next one.
pub fn width(code: u8, weight: Weight) -> u16 {
    let table = match weight {
        Weight::Regular => &REGULAR,
        Weight::Bold => &BOLD,
    };
    match code {
        32..=126 => table[usize::from(code - 32)],
        0xa0 | 0xb7 => 278,
        0xb0 => 400,
        0x95 => 350,
        0xa2 | 0xa3 | 0xa5 | 0xab | 0xbb | 0x80 | 0x96 => 556,
        0xb1 | 0xd7 | 0xf7 => 584,
        0xa9 | 0xae => 737,
        0xe6 => 889,
        0x85 | 0x89 | 0x8c | 0x97 | 0x99 | 0xc6 => 1000,
        0xc0..=0xde => 778,
        0xdf..=0xff => 611,
        _ => 1000,
    }
}

/// The width of WinAnsi `codes` in points at `size`.
pub fn measure(codes: &[u8], weight: Weight, size: f32) -> f32 {
    let units: u32 = codes.iter().map(|&c| u32::from(width(c, weight))).sum();
    units_to_points(units, size)
}

fn units_to_points(units: u32, size: f32) -> f32 {
    units as f32 * size / 1000.0
}

/// The longest prefix of `codes` that fits in `max` points, with an ellipsis if it had to be
/// cut.
pub fn fit(codes: &[u8], weight: Weight, size: f32, max: f32) -> Vec<u8> {
    // The slack absorbs rounding: a column sized to its widest cell must hold that cell.
    let max = max + 0.001;
    if measure(codes, weight, size) <= max {
        return codes.to_vec();
    }
    let mut used = u32::from(width(ELLIPSIS, weight));
    let mut kept = Vec::new();
    for &code in codes {
        used += u32::from(width(code, weight));
        if units_to_points(used, size) > max {
            break;
        }
        kept.push(code);
    }
    kept.push(ELLIPSIS);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(encode("Zürich – 5 €\n"), b"Z\xfcrich \x96 5 \x80 ");
        assert_eq!(encode("日本"), b"??");
    }

    #[test]
    fn widths() {
        // "Hello" in Helvetica: 722 + 556 + 222 + 222 + 556.
        assert!((measure(b"Hello", Weight::Regular, 10.0) - 22.78).abs() < 1e-3);
        assert!((measure(b"Hello", Weight::Bold, 10.0) - 24.45).abs() < 1e-3);
    }

    #[test]
    fn fitting_cuts_with_an_ellipsis() {
        assert_eq!(fit(b"short", Weight::Regular, 10.0, 100.0), b"short");
        // 10 pt: each "0" is 5.56 pt and the ellipsis 10 pt.
        assert_eq!(
            fit(b"0000000000", Weight::Regular, 10.0, 30.0),
            b"000\x85".to_vec()
        );
        assert_eq!(fit(b"0000", Weight::Regular, 10.0, 5.0), vec![ELLIPSIS]);
    }
}
