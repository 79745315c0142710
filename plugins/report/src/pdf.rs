//! The result as a PDF table: A4 landscape in Helvetica, which every PDF reader has built in,
//! so no font is embedded. Each page has the title, a note (row count and creation time), the
//! header row, a band of rows and its page number; cells are one line each, cut with an
//! ellipsis where they do not fit their column.

use jiff::Zoned;
use pdf_writer::{Content, Date, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::helvetica::{Weight, encode, fit, measure};

/// A4 landscape, in points: wide tables are the common case.
const PAGE_WIDTH: f32 = 842.0;
const PAGE_HEIGHT: f32 = 595.0;
const MARGIN: f32 = 36.0;
const TITLE_SIZE: f32 = 14.0;
const TITLE_BASELINE: f32 = PAGE_HEIGHT - MARGIN - TITLE_SIZE;
const NOTE_SIZE: f32 = 8.0;
const NOTE_BASELINE: f32 = TITLE_BASELINE - 16.0;
const TEXT_SIZE: f32 = 9.0;
const ROW_HEIGHT: f32 = 14.0;
/// Where the text sits in its row: vertically centred for Helvetica's capitals.
const TEXT_RISE: f32 = 4.0;
/// Between a cell's text and its column's edges.
const PADDING: f32 = 4.0;
const TABLE_TOP: f32 = NOTE_BASELINE - 10.0;
const FOOTER_BASELINE: f32 = MARGIN - 14.0;
/// Rows below the header that fit above the bottom margin.
const ROWS_PER_PAGE: usize = ((TABLE_TOP - ROW_HEIGHT - MARGIN) / ROW_HEIGHT) as usize;

const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// One value as the report shows it.
#[derive(Debug)]
pub struct Cell {
    pub text: String,
    /// Numbers are right-aligned, when their whole column is numbers.
    pub numeric: bool,
}

/// The query's result.
#[derive(Debug)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// The whole document. `note` goes under the title; `created` is recorded in its metadata.
pub fn render(title: &str, note: &str, created: &Zoned, table: &Table) -> Vec<u8> {
    let layout = Layout::new(table);
    let pages: Vec<&[Vec<Vec<u8>>]> = if layout.rows.is_empty() {
        vec![&[]]
    } else {
        layout.rows.chunks(ROWS_PER_PAGE).collect()
    };

    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let info = Ref::new(3);
    let regular = Ref::new(4);
    let bold = Ref::new(5);
    // Each page takes two ids: itself and its content stream.
    let page_id = |index: usize| Ref::new(i32::try_from(6 + 2 * index).unwrap_or(i32::MAX));

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids((0..pages.len()).map(page_id))
        .count(i32::try_from(pages.len()).unwrap_or(i32::MAX));
    for (id, font) in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
        pdf.type1_font(id)
            .base_font(Name(font.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(info)
        .title(TextStr(title))
        .producer(TextStr("Pacer report plugin"))
        .creation_date(pdf_date(created));

    let title = encode(title);
    let title = fit(&title, Weight::Bold, TITLE_SIZE, PAGE_WIDTH - 2.0 * MARGIN);
    let note = encode(note);
    for (index, rows) in pages.iter().enumerate() {
        let id = page_id(index);
        let contents = Ref::new(id.get() + 1);
        let mut page = pdf.page(id);
        page.parent(tree)
            .media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT))
            .contents(contents);
        page.resources()
            .fonts()
            .pair(REGULAR, regular)
            .pair(BOLD, bold);
        drop(page);

        let mut content = Content::new();
        text(
            &mut content,
            BOLD,
            TITLE_SIZE,
            MARGIN,
            TITLE_BASELINE,
            &title,
        );
        content.set_fill_gray(0.35);
        text(
            &mut content,
            REGULAR,
            NOTE_SIZE,
            MARGIN,
            NOTE_BASELINE,
            &note,
        );
        layout.draw(&mut content, rows);
        let footer = encode(&format!("Page {} of {}", index + 1, pages.len()));
        let footer_x = (PAGE_WIDTH - measure(&footer, Weight::Regular, NOTE_SIZE)) / 2.0;
        content.set_fill_gray(0.35);
        text(
            &mut content,
            REGULAR,
            NOTE_SIZE,
            footer_x,
            FOOTER_BASELINE,
            &footer,
        );
        pdf.stream(contents, &content.finish());
    }
    pdf.finish()
}

fn text(content: &mut Content, font: Name<'_>, size: f32, x: f32, y: f32, codes: &[u8]) {
    content
        .begin_text()
        .set_font(font, size)
        .next_line(x, y)
        .show(Str(codes))
        .end_text();
}

fn pdf_date(at: &Zoned) -> Date {
    let offset = at.offset().seconds();
    let narrow = |n: i32| u8::try_from(n).unwrap_or(0);
    Date::new(u16::try_from(at.year()).unwrap_or(0))
        .month(narrow(at.month().into()))
        .day(narrow(at.day().into()))
        .hour(narrow(at.hour().into()))
        .minute(narrow(at.minute().into()))
        .second(narrow(at.second().into()))
        .utc_offset_hour(i8::try_from(offset / 3600).unwrap_or(0))
        .utc_offset_minute(narrow(offset.abs() % 3600 / 60))
}

/// Column positions and the cells already encoded and cut to fit them.
struct Layout {
    /// Left edge and width of each column.
    columns: Vec<(f32, f32)>,
    right_aligned: Vec<bool>,
    header: Vec<Vec<u8>>,
    rows: Vec<Vec<Vec<u8>>>,
}

impl Layout {
    fn new(table: &Table) -> Self {
        let header: Vec<Vec<u8>> = table.columns.iter().map(|name| encode(name)).collect();
        let rows: Vec<Vec<Vec<u8>>> = table
            .rows
            .iter()
            .map(|row| row.iter().map(|cell| encode(&cell.text)).collect())
            .collect();
        let natural: Vec<f32> = header
            .iter()
            .enumerate()
            .map(|(column, name)| {
                let widest = rows
                    .iter()
                    .map(|row| measure(&row[column], Weight::Regular, TEXT_SIZE))
                    .fold(measure(name, Weight::Bold, TEXT_SIZE), f32::max);
                widest + 2.0 * PADDING
            })
            .collect();
        let widths = share(&natural, PAGE_WIDTH - 2.0 * MARGIN);
        let mut x = MARGIN;
        let columns = widths
            .iter()
            .map(|&width| {
                let column = (x, width);
                x += width;
                column
            })
            .collect();
        let room = |column: usize| (widths[column] - 2.0 * PADDING).max(0.0);
        let right_aligned = (0..header.len())
            .map(|column| {
                let mut cells = table.rows.iter().map(|row| &row[column]);
                let mut any = false;
                cells.all(|cell| {
                    any |= cell.numeric;
                    cell.numeric || cell.text.is_empty()
                }) && any
            })
            .collect();
        Self {
            header: header
                .iter()
                .enumerate()
                .map(|(column, name)| fit(name, Weight::Bold, TEXT_SIZE, room(column)))
                .collect(),
            rows: rows
                .iter()
                .map(|row| {
                    row.iter()
                        .enumerate()
                        .map(|(column, cell)| fit(cell, Weight::Regular, TEXT_SIZE, room(column)))
                        .collect()
                })
                .collect(),
            columns,
            right_aligned,
        }
    }

    /// The header and `rows` (one page's band), each column clipped to its own box.
    fn draw(&self, content: &mut Content, rows: &[Vec<Vec<u8>>]) {
        let width: f32 = self.columns.iter().map(|(_, w)| w).sum();
        let header_bottom = TABLE_TOP - ROW_HEIGHT;
        let row_bottom = |index: usize| header_bottom - ROW_HEIGHT * (index + 1) as f32;
        content.set_fill_gray(0.85);
        content.rect(MARGIN, header_bottom, width, ROW_HEIGHT);
        content.fill_nonzero();
        // Every other row shaded, so that a wide row reads across.
        content.set_fill_gray(0.95);
        if rows.len() > 1 {
            for index in (1..rows.len()).step_by(2) {
                content.rect(MARGIN, row_bottom(index), width, ROW_HEIGHT);
            }
            content.fill_nonzero();
        }
        content.set_fill_gray(0.0);

        let bottom = row_bottom(rows.len().max(1) - 1);
        for (column, &(x, width)) in self.columns.iter().enumerate() {
            content.save_state();
            content.rect(x, bottom, width, TABLE_TOP - bottom);
            content.clip_nonzero();
            content.end_path();
            content.begin_text();
            let place = |content: &mut Content, codes: &[u8], weight, y: f32| {
                let left = if self.right_aligned[column] {
                    x + width - PADDING - measure(codes, weight, TEXT_SIZE)
                } else {
                    x + PADDING
                };
                content
                    .set_text_matrix([1.0, 0.0, 0.0, 1.0, left, y + TEXT_RISE])
                    .show(Str(codes));
            };
            content.set_font(BOLD, TEXT_SIZE);
            place(content, &self.header[column], Weight::Bold, header_bottom);
            content.set_font(REGULAR, TEXT_SIZE);
            for (index, row) in rows.iter().enumerate() {
                place(content, &row[column], Weight::Regular, row_bottom(index));
            }
            content.end_text();
            content.restore_state();
        }
    }
}

/// Column widths that fit in `available`: every column gets its natural width if they all fit;
/// otherwise the narrow ones keep theirs and the wide ones share what is left equally.
fn share(natural: &[f32], available: f32) -> Vec<f32> {
    if natural.iter().sum::<f32>() <= available {
        return natural.to_vec();
    }
    let mut order: Vec<usize> = (0..natural.len()).collect();
    order.sort_by(|&a, &b| natural[a].total_cmp(&natural[b]));
    let mut widths = vec![0.0; natural.len()];
    let mut left = available;
    for (done, &column) in order.iter().enumerate() {
        let fair = left / (natural.len() - done) as f32;
        widths[column] = natural[column].min(fair);
        left -= widths[column];
    }
    widths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_columns_keep_their_width_and_wide_ones_share_the_rest() {
        assert_eq!(share(&[10.0, 20.0], 100.0), [10.0, 20.0]);
        assert_eq!(share(&[10.0, 500.0, 300.0], 110.0), [10.0, 50.0, 50.0]);
        assert_eq!(share(&[10.0, 500.0, 30.0], 110.0), [10.0, 70.0, 30.0]);
    }

    #[test]
    fn a_page_holds_a_band_of_rows() {
        assert_eq!(ROWS_PER_PAGE, 33);
    }
}
