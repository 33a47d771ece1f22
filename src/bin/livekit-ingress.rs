fn main() {
    println!("livekit-ingress");
}
