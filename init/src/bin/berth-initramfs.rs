//! The initramfs's `/init`: PID 1's stage 1 and stage 2 without the rest of
//! `berth` (berthd, the CLI, images, TLS), 1.5 MiB instead of 9.5. After the
//! switch to the new root this same process is stage 2, and berthd runs from
//! the root's `berth` (stage 1 does not switch to a root without one).

#[global_allocator]
static ALLOCATOR: berth_sys::alloc::Allocator = berth_sys::alloc::Allocator;

fn main() {
    berth_init::main(true)
}
