use crate::engine::Engine;

use crate::cli::NetworkCmd;
use crate::output;

pub fn run(ignis: &dyn Engine, cmd: NetworkCmd) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Ls(opts) => {
            let net = ignis.network_inspect()?;
            let rows = vec![
                vec![
                    net.name.clone(),
                    net.bridge.clone(),
                    match &net.subnet6 {
                        Some(s6) => format!("{}, {s6}", net.subnet),
                        None => net.subnet.clone(),
                    },
                    match &net.gateway6 {
                        Some(g6) => format!("{}, {g6}", net.gateway),
                        None => net.gateway.clone(),
                    },
                    net.leases.len().to_string(),
                ],
                vec![
                    "none".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
            ];
            let ids = vec![net.name.clone(), "none".into()];
            output::list(
                &opts,
                &["NAME", "BRIDGE", "SUBNET", "GATEWAY", "LEASES"],
                rows,
                &[net],
                ids,
            )?;
        }
        NetworkCmd::Inspect {
            network,
            output: fmt,
        } => {
            if network != "bridge" {
                anyhow::bail!("no network '{network}' (the networks are bridge and none)");
            }
            output::inspect(fmt, &ignis.network_inspect()?)?;
        }
    }
    Ok(())
}
