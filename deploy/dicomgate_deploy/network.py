"""The network: VPC (new or existing), endpoints, flow logs and every security group.

Tasks run in private subnets with no route to the internet: a new VPC has isolated subnets
and no NAT gateway. Everything the node and Fargate talk to is reached through VPC endpoints
(S3 and DynamoDB gateways; ECR, CloudWatch Logs, Secrets Manager, KMS, SNS and, with a
notification queue, SQS as interface endpoints) or inside the VPC (EFS mount targets).

Security groups, all with explicit egress:

* NLB: inbound DICOM ports from ``network.allowed_cidrs`` only; outbound to the tasks' ports.
* tasks: inbound DICOM ports from the NLB's group (and from the senders' networks when the
  NLB preserves client addresses); outbound HTTPS (endpoints), NFS to the spool (and audit
  files), and the ``network.egress`` rules (commitment callbacks, audit repository).
* EFS: NFS from the tasks only. Endpoints: HTTPS from the tasks only.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from dicomgate_deploy.config import RETENTION_DAYS, DeployConfig
from dicomgate_deploy.encryption import log_group_prefix
from dicomgate_deploy.nag import acknowledge

DICOM_PORT = 11112
OPS_PORT = 8080
HTTPS = 443
NFS = 2049


class Network(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        key: kms.IKey,
        removal: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        c = config
        # the ports the container listens on, and so the NLB's listeners: 11112 unless TLS
        # only (a listener the node does not open would fail its health checks for ever)
        self.dicom_ports: list[int] = [DICOM_PORT] if c.tls.plaintext else []
        if c.tls.enabled:
            self.dicom_ports.append(c.tls.port)
        # worker i of the task serves its ops endpoint on OPS_PORT + i
        self.ops_ports = list(range(OPS_PORT, OPS_PORT + c.service.workers))

        if c.vpc.vpc_id is None:
            subnets = [
                ec2.SubnetConfiguration(
                    name="app", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=22
                )
            ]
            if c.network.internet_facing:
                subnets.append(
                    ec2.SubnetConfiguration(
                        name="edge",
                        subnet_type=ec2.SubnetType.PUBLIC,
                        cidr_mask=26,
                        # only the NLB lives here; it needs no auto-assigned addresses
                        map_public_ip_on_launch=False,
                    )
                )
            self.vpc: ec2.IVpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr(c.vpc.cidr),
                max_azs=None if c.vpc.availability_zones else 2,
                availability_zones=c.vpc.availability_zones or None,
                nat_gateways=0,
                subnet_configuration=subnets,
                # closes the default security group (a CDK custom resource does it: CloudFormation
                # cannot change the default group's rules)
                restrict_default_security_group=True,
                enable_dns_hostnames=True,
                enable_dns_support=True,
            )
            self.task_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
            if c.network.internet_facing:
                for subnet in self.vpc.public_subnets:
                    acknowledge(
                        subnet,
                        "HIPAA.Security-VPCNoUnrestrictedRouteToIGW",
                        "Public subnets of an internet-facing NLB (network.internet_facing): "
                        "only the NLB's nodes live here and its security group admits the "
                        "allowed networks only; tasks, spool and endpoints stay in isolated "
                        "subnets without such a route.",
                    )
            self.nlb_subnets = ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC
                if c.network.internet_facing
                else ec2.SubnetType.PRIVATE_ISOLATED
            )
        else:
            # Described by ids: no context lookup, synthesis stays offline.
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=c.vpc.vpc_id,
                availability_zones=c.vpc.availability_zones,
                private_subnet_ids=c.vpc.private_subnet_ids,
                private_subnet_route_table_ids=c.vpc.private_subnet_route_table_ids,
                public_subnet_ids=c.vpc.public_subnet_ids or None,
            )
            self.task_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
            self.nlb_subnets = ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC
                if c.network.internet_facing
                else ec2.SubnetType.PRIVATE_WITH_EGRESS
            )

        # -- security groups ------------------------------------------------------------------
        self.nlb_sg = ec2.SecurityGroup(
            self,
            "NlbSg",
            vpc=self.vpc,
            description="dicomgate NLB: DICOM ports from the allowed networks only",
            allow_all_outbound=False,
        )
        self.task_sg = ec2.SecurityGroup(
            self,
            "TaskSg",
            vpc=self.vpc,
            description="dicomgate tasks: DICOM from the NLB; out to endpoints and the spool",
            allow_all_outbound=False,
        )
        self.efs_sg = ec2.SecurityGroup(
            self,
            "SpoolSg",
            vpc=self.vpc,
            description="dicomgate spool (EFS): NFS from the tasks only",
            allow_all_outbound=False,
        )
        for port in self.dicom_ports:
            for cidr in c.network.allowed_cidrs:
                self.nlb_sg.add_ingress_rule(
                    _peer(cidr), ec2.Port.tcp(port), f"DICOM {port} from an allowed network"
                )
                if c.network.preserve_client_ip:
                    # the task sees the sender's address, so its group must admit it too
                    self.task_sg.add_ingress_rule(
                        _peer(cidr), ec2.Port.tcp(port), f"DICOM {port} via NLB, client address"
                    )
            self.nlb_sg.add_egress_rule(
                self.task_sg, ec2.Port.tcp(port), f"DICOM {port} to the tasks (and health checks)"
            )
            self.task_sg.add_ingress_rule(
                self.nlb_sg, ec2.Port.tcp(port), f"DICOM {port} and health checks from the NLB"
            )
        for cidr in c.network.ops_cidrs:
            self.task_sg.add_ingress_rule(
                _peer(cidr),
                ec2.Port.tcp_range(self.ops_ports[0], self.ops_ports[-1]),
                "ops HTTP (/healthz, /metrics), one port per worker",
            )
        self.task_sg.add_egress_rule(self.efs_sg, ec2.Port.tcp(NFS), "NFS to the spool (EFS)")
        self.efs_sg.add_ingress_rule(self.task_sg, ec2.Port.tcp(NFS), "NFS from the tasks")
        # HTTPS out: interface endpoints and the S3/DynamoDB gateway endpoints. The gateways'
        # prefix lists are regional ids that synthesis cannot know offline, so this rule names
        # any address; the subnets' route tables reach nothing but the endpoints (new VPC:
        # isolated subnets, no NAT).
        self.task_sg.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS), "HTTPS to VPC endpoints (AWS APIs)"
        )
        # Peers outside AWS the node calls itself: storage commitment reports to senders whose
        # association has closed (the node's commitment_peers), the audit repository (syslog
        # over TLS). The subnets need a route there too (an existing VPC's VPN/TGW).
        for rule in c.network.egress:
            for port in rule.ports:
                self.task_sg.add_egress_rule(
                    _peer(rule.cidr), ec2.Port.tcp(port), f"{rule.description} (TCP {port})"
                )

        # -- endpoints ----------------------------------------------------------------------
        self.endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        self.endpoint_sg: ec2.SecurityGroup | None = None
        if c.vpc.create_endpoints:
            for name, service in (
                ("S3", ec2.GatewayVpcEndpointAwsService.S3),
                ("DynamoDB", ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            ):
                ec2.GatewayVpcEndpoint(
                    self,
                    f"{name}Gateway",
                    vpc=self.vpc,
                    service=service,
                    subnets=[self.task_subnets],
                )
            self.endpoint_sg = ec2.SecurityGroup(
                self,
                "EndpointSg",
                vpc=self.vpc,
                description="dicomgate interface endpoints: HTTPS from the tasks only",
                allow_all_outbound=False,
            )
            self.endpoint_sg.add_ingress_rule(
                self.task_sg, ec2.Port.tcp(HTTPS), "HTTPS from the tasks"
            )
            services = [
                ("EcrApi", ec2.InterfaceVpcEndpointAwsService.ECR),
                ("EcrDocker", ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER),
                ("Logs", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS),
                ("SecretsManager", ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER),
                ("Kms", ec2.InterfaceVpcEndpointAwsService.KMS),
                # not in the list, but the node publishes study notifications to SNS
                ("Sns", ec2.InterfaceVpcEndpointAwsService.SNS),
            ]
            if c.notifications.sqs_queue:
                services.append(("Sqs", ec2.InterfaceVpcEndpointAwsService.SQS))
            for name, service in services:
                self.endpoints[name] = ec2.InterfaceVpcEndpoint(
                    self,
                    f"{name}Endpoint",
                    vpc=self.vpc,
                    service=service,
                    subnets=self.task_subnets,
                    private_dns_enabled=True,
                    open=False,
                    security_groups=[self.endpoint_sg],
                )

        # -- flow logs ------------------------------------------------------------------------
        self.flow_log_group: logs.LogGroup | None = None
        if c.vpc.flow_logs:
            self.flow_log_group = logs.LogGroup(
                self,
                "FlowLogs",
                log_group_name=f"{log_group_prefix(c.stack_name)}vpc-flow-logs",
                encryption_key=key,
                retention=retention(c.service.log_retention_days),
                removal_policy=removal,
            )
            flow_log = ec2.FlowLog(
                self,
                "FlowLog",
                resource_type=ec2.FlowLogResourceType.from_vpc(self.vpc),
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
                traffic_type=ec2.FlowLogTrafficType.ALL,
            )
            acknowledge(
                flow_log,
                "HIPAA.Security-IAMNoInlinePolicy",
                "CDK's flow-log delivery role: its own policy lets VPC Flow Logs write to this "
                "one log group (and pass the role); a managed policy would be no narrower.",
            )


def _peer(cidr: str) -> ec2.IPeer:
    return ec2.Peer.ipv6(cidr) if ":" in cidr else ec2.Peer.ipv4(cidr)


def retention(days: int) -> logs.RetentionDays:
    """The CloudWatch Logs retention of ``days`` (one of :data:`RETENTION_DAYS`)."""
    names = [m for m in logs.RetentionDays if m.name != "INFINITE"]
    return dict(zip(RETENTION_DAYS, names, strict=True))[days]
