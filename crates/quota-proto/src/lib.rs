pub mod v1 {
    tonic::include_proto!("quota.v1");
}
