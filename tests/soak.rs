//! Soak test (`make soak`): placeholder until the soak is written.
fn main() {
    println!("soak: not written yet");
}
