import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { type AppUserRole, DbSetup, type ResponseMode } from './db-setup';

/** Options of {@link DatabaseStack}. */
export interface DatabaseStackProps extends StackProps {
  /** The db-setup function's code (see `packagedCode`). */
  readonly code: lambda.Code;
  /** Must match the binary. */
  readonly architecture: lambda.Architecture;
  /** @default 'direct' */
  readonly responseMode?: ResponseMode;
  /** @default app_rw (readwrite) and app_ro (readonly) */
  readonly users?: { username: string; role: AppUserRole }[];
}

/** Port the database listens on. */
const DB_PORT = 5432;
/** The database the application uses (created with the instance). */
const DB_NAME = 'app';

/**
 * A private PostgreSQL 16 database (pgvector available) and the db-setup custom resource
 * that migrates it and creates its application users on every deploy.
 *
 * Network: a VPC with isolated subnets only (no NAT, no internet gateway); the function
 * reaches Secrets Manager through an interface endpoint and S3 (the direct-mode response)
 * through a gateway endpoint.
 */
export class DatabaseStack extends Stack {
  /** The VPC (isolated subnets in two AZs). */
  public readonly vpc: ec2.Vpc;
  /** The RDS instance. */
  public readonly database: rds.DatabaseInstance;
  /** One secret per application user, by username. */
  public readonly userSecrets: Record<string, secretsmanager.Secret> = {};
  /** The db-setup construct. */
  public readonly dbSetup: DbSetup;

  constructor(scope: Construct, id: string, props: DatabaseStackProps) {
    super(scope, id, props);

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'isolated', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 }],
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
      flowLogs: {
        rejected: {
          trafficType: ec2.FlowLogTrafficType.REJECT,
          destination: ec2.FlowLogDestination.toCloudWatchLogs(
            new logs.LogGroup(this, 'FlowLogs', { retention: logs.RetentionDays.ONE_MONTH }),
          ),
        },
      },
    });
    // Closed by default: opened below to the function only (and to whatever else needs it).
    const secretsEndpoint = this.vpc.addInterfaceEndpoint('SecretsManager', {
      service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      open: false,
    });

    const engine = rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_16_13 });
    this.database = new rds.DatabaseInstance(this, 'Database', {
      engine,
      instanceType: ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MICRO),
      vpc: this.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      port: DB_PORT,
      databaseName: DB_NAME,
      credentials: rds.Credentials.fromGeneratedSecret('postgres'),
      storageEncrypted: true,
      storageType: rds.StorageType.GP3,
      allocatedStorage: 20,
      maxAllocatedStorage: 100,
      // The CA the function's embedded bundle trusts (DB_SETUP_TLS=verify-full).
      caCertificate: rds.CaCertificate.RDS_CA_RSA2048_G1,
      parameterGroup: new rds.ParameterGroup(this, 'Parameters', {
        engine,
        description: 'TLS required for every connection',
        parameters: { 'rds.force_ssl': '1' },
      }),
      backupRetention: Duration.days(7),
      deletionProtection: true,
      removalPolicy: RemovalPolicy.SNAPSHOT,
    });
    Validations.of(this.database).acknowledge(
      {
        id: 'AwsSolutions-RDS3',
        reason: 'Single-AZ keeps the example stack cheap; set multiAz for production.',
      },
      {
        id: 'AwsSolutions-RDS11',
        reason: 'The default port: the instance is only reachable from the isolated subnets, through its security group.',
      },
    );

    const users = props.users ?? [
      { username: 'app_rw', role: 'readwrite' },
      { username: 'app_ro', role: 'readonly' },
    ];
    for (const user of users) {
      // A placeholder the database does not know: db-setup replaces a value that does not
      // log in with the full RDS secret JSON (host, port, dbname, username, password).
      const secret = new secretsmanager.Secret(this, `User-${user.username}`, {
        description: `PostgreSQL user ${user.username} (${user.role}); written by db-setup`,
        generateSecretString: {
          secretStringTemplate: JSON.stringify({ username: user.username }),
          generateStringKey: 'password',
          excludePunctuation: true,
        },
      });
      this.userSecrets[user.username] = secret;
    }

    this.dbSetup = new DbSetup(this, 'DbSetup', {
      code: props.code,
      architecture: props.architecture,
      vpc: this.vpc,
      database: this.database,
      adminSecret: this.database.secret!,
      host: this.database.instanceEndpoint.hostname,
      port: DB_PORT,
      databaseName: DB_NAME,
      users: users.map((u) => ({ ...u, secret: this.userSecrets[u.username] })),
      responseMode: props.responseMode,
    });
    secretsEndpoint.connections.allowDefaultPortFrom(this.dbSetup.securityGroup, 'db-setup function');

    new CfnOutput(this, 'DatabaseEndpoint', { value: this.database.instanceEndpoint.socketAddress });
    new CfnOutput(this, 'AdminSecretArn', { value: this.database.secret!.secretArn });
    for (const [username, secret] of Object.entries(this.userSecrets)) {
      new CfnOutput(this, `UserSecretArn-${username}`, {
        description: `Credentials of ${username} (RDS secret JSON)`,
        value: secret.secretArn,
      });
    }

    Validations.of(this).acknowledge(
      {
        id: 'AwsSolutions-SMG4',
        reason:
          'No rotation schedule in the example stack: db-setup reads the admin secret at each run and ' +
          'replaces a user secret that does not log in; add rds addRotationSingleUser/MultiUser to rotate on a schedule.',
      },
    );
  }
}
