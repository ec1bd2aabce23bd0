//! The initramfs's `/init`: PID 1's stage 1 without the rest of `berth`
//! (berthd, the CLI, images, TLS), 1.5 MiB instead of 9.5. Stage 1 ends by
//! exec'ing the new root's `berth` as `init`, which runs stage 2.

fn main() {
    // Stage 2 never runs from this binary: it is only ever the initramfs's.
    berth_init::main(true)
}
