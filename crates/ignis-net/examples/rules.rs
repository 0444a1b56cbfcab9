//! Prints the ruleset for one published port (for `nft -c -j -f -`).
fn main() {
    let subnet: ignis_net::Subnet = ignis_net::SUBNET.parse().expect("subnet");
    let fw = [ignis_net::Forward {
        mapping: ignis_net::parse_port("8080:80").expect("port"),
        vm_ip: "10.61.0.2".parse().expect("ip"),
    }];
    println!(
        "{}",
        ignis_net::ruleset(ignis_net::BRIDGE, subnet, None, &fw)
    );
}
