//! Checksum benchmark (issue 15): CRC32C throughput of the WAL record and snapshot checksum
//! (`kommander::core::codec::crc32c`, the `crc32c` crate: SSE 4.2 where the CPU has it) side by
//! side with the table-driven byte-at-a-time loop the codec used before, on record-sized and
//! chunk-sized buffers, in one run.
//!
//! ```text
//! cargo run --release --example bench_checksum
//! ```

use std::hint::black_box;
use std::time::Instant;

/// The former implementation, kept here only as the comparison baseline.
fn table_driven(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// MB/s of `f` over `data`, for about 0.3 s.
fn throughput(data: &[u8], f: impl Fn(&[u8]) -> u32) -> f64 {
    let started = Instant::now();
    let mut bytes = 0usize;
    while started.elapsed().as_secs_f64() < 0.3 {
        for _ in 0..64 {
            black_box(f(black_box(data)));
            bytes += data.len();
        }
    }
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}

fn main() {
    println!("CRC32C throughput (MB/s), one run, same buffers\n");
    println!("{:>10} {:>14} {:>14} {:>8}", "bytes", "table-driven", "crc32c crate", "ratio");
    for size in [64usize, 512, 4 << 10, 64 << 10, 1 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        assert_eq!(table_driven(&data), kommander::core::codec::crc32c(&data), "same checksum");
        let old = throughput(&data, table_driven);
        let new = throughput(&data, kommander::core::codec::crc32c);
        println!("{size:>10} {old:>14.0} {new:>14.0} {:>7.1}x", new / old);
    }
}
