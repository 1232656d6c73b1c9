//! `sqlx::migrate!` embeds the migration folders at compile time, but a proc macro cannot
//! tell cargo to watch a directory: this does, so a new or edited migration rebuilds the crate.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
