//! The REST-JSON management API compatible with AWS API Gateway's `apigateway` service (v1)
//! for API keys and usage plans, so that the AWS CLI and SDKs work against quotad with
//! `--endpoint-url`. Requests are authenticated with AWS Signature Version 4.

pub mod sigv4;
