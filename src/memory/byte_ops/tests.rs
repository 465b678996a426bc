//! Each function against the plainest reference (a byte at a time, or the standard
//! library's slice comparison) over every length up to 300 and some long ones, several
//! alignments of both ends within 16 bytes, and every overlap of a copy up to 300 bytes.

use super::*;

const LENGTHS: [usize; 8] = [511, 512, 513, 1000, 4095, 4096, 10_000, 70_000];

fn lengths() -> impl Iterator<Item = usize> {
    (0..=300).chain(LENGTHS)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn copy_matches_a_byte_loop_at_every_length_alignment_and_overlap() {
    for n in lengths() {
        for (from, to) in [(0, 0), (1, 0), (0, 3), (7, 9), (15, 1), (8, 8)] {
            let src = pattern(n + 16, 5);
            let mut dest = vec![0xEEu8; n + 32];
            unsafe { copy(dest.as_mut_ptr().add(to), src.as_ptr().add(from), n) };
            assert_eq!(&dest[to..to + n], &src[from..from + n], "length {n}");
            assert!(dest[..to].iter().all(|&b| b == 0xEE), "before, length {n}");
            assert!(
                dest[to + n..].iter().all(|&b| b == 0xEE),
                "after, length {n}"
            );
        }
        // Within one buffer: the destination before, on and after the source.
        let shifts: Vec<isize> = if n <= 300 {
            (-(n as isize) - 1..=n as isize + 1).collect()
        } else {
            vec![-(n as isize), -129, -64, -1, 0, 1, 8, 64, 129, n as isize]
        };
        for shift in shifts {
            let base = n + 2;
            let mut buf = pattern(3 * n + 4, 9);
            let mut expected = buf.clone();
            let to = (base as isize + shift) as usize;
            expected.copy_within(base..base + n, to);
            unsafe { copy(buf.as_mut_ptr().add(to), buf.as_ptr().add(base), n) };
            assert!(
                buf == expected,
                "length {n}, destination {shift:+} from the source"
            );
        }
    }
}

#[test]
fn fill_matches_a_byte_loop_at_every_length_and_alignment() {
    for n in lengths() {
        for at in [0, 1, 3, 8, 13] {
            let mut buf = vec![0x11u8; n + 32];
            unsafe { fill(buf.as_mut_ptr().add(at), 0xA7, n) };
            for (i, &b) in buf.iter().enumerate() {
                let want = if (at..at + n).contains(&i) {
                    0xA7
                } else {
                    0x11
                };
                assert_eq!(b, want, "byte {i}, length {n} at {at}");
            }
        }
    }
}

#[test]
fn compare_orders_as_the_standard_library_at_every_length_and_difference() {
    for n in lengths() {
        let a = pattern(n + 8, 3);
        for at in [0, 1, 5] {
            let x = &a[at..at + n];
            assert_eq!(unsafe { compare(x.as_ptr(), x.to_vec().as_ptr(), n) }, 0);
            // One byte different at each place (every place up to 300, some beyond),
            // above and below, including across the sign bit.
            let places: Vec<usize> = if n <= 300 {
                (0..n).collect()
            } else {
                vec![0, 7, 8, 255, n / 2, n - 9, n - 8, n - 1]
            };
            for place in places {
                for new in [
                    x[place].wrapping_add(1),
                    x[place].wrapping_sub(1),
                    0x80,
                    0x7F,
                    0,
                    0xFF,
                ] {
                    let mut y = x.to_vec();
                    y[place] = new;
                    let got = unsafe { compare(x.as_ptr(), y.as_ptr(), n) };
                    let want = x.cmp(&y[..]);
                    assert_eq!(
                        got.cmp(&0),
                        want,
                        "length {n}, byte {place} {} -> {new}",
                        x[place]
                    );
                    let back = unsafe { compare(y.as_ptr(), x.as_ptr(), n) };
                    assert_eq!(back.cmp(&0), want.reverse());
                }
            }
        }
    }
}
