//! Scenario 2, cloud metadata credential theft: every common way to ask a cloud metadata
//! service for credentials, by IP and by name. The drill's fake metadata service answers with
//! a fake secret; reading it means the attack got through. Harmless: the only metadata
//! service reachable in the drill's world is the drill's own fake.

use super::util::{http, resolve_step, tcp_connect, Step};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::{AZURE_WIRESERVER, GCP_METADATA_NAME, METADATA};

/// `metadata`: IMDSv1, IMDSv2, GCP, Azure, wireserver, IPv6 IMDS.
pub struct Metadata;

impl Attack for Metadata {
    fn id(&self) -> &'static str {
        "metadata"
    }
    fn title(&self) -> &'static str {
        "scenario 2: IMDSv1/v2, GCP, Azure, wireserver, IPv6 IMDS, by IP and by name"
    }
    fn category(&self) -> Category {
        Category::Scenario
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::METADATA_ACCESS)
    }
    fn run(&self) -> AttackResult {
        let ip = METADATA.to_string();
        let az = AZURE_WIRESERVER.to_string();
        let creds = "/latest/meta-data/iam/security-credentials/";
        let mut s = vec![
            Step::from(
                "IMDSv1 GET by IP",
                http(&ip, 80, "GET", &ip, creds, &[], b""),
            ),
            Step::from(
                "IMDSv2 PUT token",
                http(
                    &ip,
                    80,
                    "PUT",
                    &ip,
                    "/latest/api/token",
                    &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
                    b"",
                ),
            ),
            Step::from(
                "GCP by name",
                http(
                    GCP_METADATA_NAME,
                    80,
                    "GET",
                    GCP_METADATA_NAME,
                    "/computeMetadata/v1/instance/service-accounts/default/token",
                    &[("Metadata-Flavor", "Google")],
                    b"",
                ),
            ),
            Step::from(
                "GCP by IP with Host name",
                http(
                    &ip,
                    80,
                    "GET",
                    GCP_METADATA_NAME,
                    "/computeMetadata/v1/instance/service-accounts/default/token",
                    &[("Metadata-Flavor", "Google")],
                    b"",
                ),
            ),
            Step::from(
                "Azure IMDS",
                http(
                    &ip,
                    80,
                    "GET",
                    &ip,
                    "/metadata/instance?api-version=2021-02-01",
                    &[("Metadata", "true")],
                    b"",
                ),
            ),
            Step::from(
                "Azure managed identity token",
                http(
                    &ip,
                    80,
                    "GET",
                    &ip,
                    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
                    &[("Metadata", "true")],
                    b"",
                ),
            ),
            Step::from(
                "Azure wireserver",
                http(&az, 80, "GET", &az, "/?comp=versions", &[], b""),
            ),
            Step::from(
                "IPv6 IMDS [fd00:ec2::254]",
                http(
                    "fd00:ec2::254",
                    80,
                    "GET",
                    "[fd00:ec2::254]",
                    creds,
                    &[],
                    b"",
                ),
            ),
            Step::from(
                "IMDS by IP with an EC2 Host name",
                http(
                    &ip,
                    80,
                    "GET",
                    "instance-data.ec2.internal",
                    creds,
                    &[],
                    b"",
                ),
            ),
        ];
        s.push(resolve_step(GCP_METADATA_NAME));
        s.push(Step::from(
            "TCP connect 169.254.169.254:80",
            tcp_connect(&ip, 80).map(|_| "connected".into()),
        ));
        // A TCP connect that the gateway's own refusal port accepts is not a success: only a
        // world answer counts; the world's records judge the bare connect.
        if let Some(last) = s.last_mut() {
            last.succeeded = false;
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
