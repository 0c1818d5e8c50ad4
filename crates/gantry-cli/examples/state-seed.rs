//! Copies one cluster's records many times, for benchmarks of commands that read the whole
//! store (`benches/state-stores.sh`): `state-seed STORE_URL PROJECT CLUSTER COPIES`.
//!
//! The cluster (made by a real `gantry up`) is read with its nodes and written again as
//! `<CLUSTER>-c0001`..: same spec, fresh uids, node names and tags following the copy's name.
//! Only records are written; no machine is made, so the copies' nodes are "missing" to the
//! provider. Benchmarks only: it writes straight into the store.

mod common;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, project, cluster, copies] = args.as_slice() else {
        return Err("usage: state-seed STORE_URL PROJECT CLUSTER COPIES".into());
    };
    let copies: usize = copies.parse()?;
    let store = common::open(path).await?;
    let Some(record) = store.get_cluster(project, cluster).await? else {
        return Err(format!("no cluster {cluster} in project {project}").into());
    };
    let nodes = store.list_nodes(project, cluster).await?;
    for i in 1..=copies {
        let name = format!("{cluster}-c{i:04}");
        let uid = uuid::Uuid::new_v4().to_string();
        let mut c = record.clone();
        c.name = name.clone();
        c.uid = uid.clone();
        store.put_cluster(&c).await?;
        for n in &nodes {
            let mut n = n.clone();
            n.cluster = name.clone();
            n.name = n.name.replacen(cluster.as_str(), &name, 1);
            n.provider_id = format!("{}-{i}", n.provider_id);
            for (k, v) in n.tags.iter_mut() {
                if v == cluster {
                    *v = name.clone();
                } else if *v == record.uid {
                    *v = uid.clone();
                }
                let _ = k;
            }
            store.put_node(&n).await?;
        }
    }
    println!("{copies} copies of {cluster} ({} nodes each)", nodes.len());
    Ok(())
}
