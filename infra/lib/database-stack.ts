import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import type { Construct } from 'constructs';
import { type AppUser, DbSetup, type IamUser, type PasswordUser, type ResponseMode } from './db-setup';

/** An application user of the example stack: the stack creates the secret of a password user. */
export type ExampleUser = Omit<PasswordUser, 'secret'> | IamUser;

/** Options of {@link DatabaseStack}. */
export interface DatabaseStackProps extends StackProps {
  /** The db-setup function's code (see `packagedCode`). */
  readonly code: lambda.Code;
  /** Must match the binary. */
  readonly architecture: lambda.Architecture;
  /** @default 'direct' */
  readonly responseMode?: ResponseMode;
  /**
   * @default app_rw (readwrite, password, alternating-users rotation every 30 days) and
   * app_ro (readonly, IAM authentication, granted to {@link DatabaseStack.appRole})
   */
  readonly users?: ExampleUser[];
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
 *
 * Users (by default): `app_rw` with a password, its secret rotated by Secrets Manager's
 * hosted alternating-users rotation; `app_ro` logging in with IAM, granted to a stand-in
 * application role.
 */
export class DatabaseStack extends Stack {
  /** The VPC (isolated subnets in two AZs). */
  public readonly vpc: ec2.Vpc;
  /** The RDS instance. */
  public readonly database: rds.DatabaseInstance;
  /** One secret per password user, by username. */
  public readonly userSecrets: Record<string, secretsmanager.Secret> = {};
  /** The db-setup construct. */
  public readonly dbSetup: DbSetup;
  /**
   * A stand-in for the role the application runs as (here an ECS task role): granted
   * `rds-db:connect` as every IAM user.
   */
  public readonly appRole: iam.Role;
  /**
   * A stand-in for the application's deployment (its release, as a parameter): created or
   * updated after db-setup's expand phase and before its contract phase.
   */
  public readonly application: ssm.StringParameter;

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
      // A generated secret in the RDS JSON (engine, host, port, username, password): the
      // alternating-users rotation logs in with it to manage the users.
      credentials: rds.Credentials.fromGeneratedSecret('postgres'),
      // For the IAM users (token logins, TLS only).
      iamAuthentication: true,
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

    const users: ExampleUser[] = props.users ?? [
      { username: 'app_rw', role: 'readwrite', rotation: { type: 'alternating-users' } },
      { username: 'app_ro', role: 'readonly', auth: 'iam' },
    ];
    const appUsers: AppUser[] = users.map((user) => {
      if (user.auth === 'iam') {
        return user;
      }
      // A placeholder the database does not know: db-setup replaces a value that does not
      // log in with the full RDS secret JSON (host, port, dbname, username, password, masterarn).
      const secret = new secretsmanager.Secret(this, `User-${user.username}`, {
        description: `PostgreSQL user ${user.username} (${user.role}); written by db-setup`,
        generateSecretString: {
          secretStringTemplate: JSON.stringify({ username: user.username }),
          generateStringKey: 'password',
          excludePunctuation: true,
        },
      });
      this.userSecrets[user.username] = secret;
      if (user.rotation === undefined) {
        Validations.of(secret).acknowledge({
          id: 'AwsSolutions-SMG4',
          reason:
            `No rotation configured for ${user.username}: db-setup replaces its secret when it no longer logs in; ` +
            'give the user a rotation to rotate it on a schedule.',
        });
      }
      return { ...user, secret };
    });

    this.dbSetup = new DbSetup(this, 'DbSetup', {
      code: props.code,
      architecture: props.architecture,
      vpc: this.vpc,
      database: this.database,
      adminSecret: this.database.secret!,
      host: this.database.instanceEndpoint.hostname,
      port: DB_PORT,
      databaseName: DB_NAME,
      users: appUsers,
      responseMode: props.responseMode,
    });
    // The function and the rotation functions reach Secrets Manager through the endpoint.
    this.dbSetup.allowEndpointAccess(secretsEndpoint);
    // Direct mode: a deploy longer than one invocation goes on in a new one, which the
    // function starts itself through the Lambda API (its endpoint, for the function only).
    if ((props.responseMode ?? 'direct') === 'direct') {
      const lambdaEndpoint = this.vpc.addInterfaceEndpoint('Lambda', {
        service: ec2.InterfaceVpcEndpointAwsService.LAMBDA,
        open: false,
      });
      this.dbSetup.allowEndpointAccess(lambdaEndpoint, { functionOnly: true });
    }

    this.appRole = new iam.Role(this, 'AppRole', {
      description: 'Stand-in for the application role: may log in to the database as the IAM users',
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
    });
    for (const user of users) {
      if (user.auth === 'iam') {
        this.dbSetup.grantConnect(this.appRole, user.username);
      }
    }

    // Two-phase deploys: the application (here a stand-in) is deployed between db-setup's
    // expand phase (additive migrations, the users) and its contract phase (what only the
    // previous application version used: docs/migrations.md, "Expand and contract").
    this.application = new ssm.StringParameter(this, 'ApplicationRelease', {
      description: 'Stand-in for the application deployment: its release',
      stringValue: this.node.tryGetContext('applicationRelease') ?? '1',
    });
    this.dbSetup.runExpandBefore(this.application);
    this.dbSetup.runContractAfter(this.application);

    new CfnOutput(this, 'DatabaseEndpoint', { value: this.database.instanceEndpoint.socketAddress });
    new CfnOutput(this, 'AdminSecretArn', { value: this.database.secret!.secretArn });
    for (const [username, secret] of Object.entries(this.userSecrets)) {
      new CfnOutput(this, `UserSecretArn-${username}`, {
        description: `Credentials of ${username} (RDS secret JSON)`,
        value: secret.secretArn,
      });
    }
    new CfnOutput(this, 'AppRoleArn', {
      description: 'The stand-in application role, allowed to log in as the IAM users',
      value: this.appRole.roleArn,
    });

    // The admin secret is not rotated here; the user secrets are acknowledged above, one by one.
    Validations.of(this.database.node.findChild('Secret')).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'The admin secret is not rotated in the example stack: db-setup and the alternating-users rotation read it ' +
        'at each run; add database.addRotationSingleUser() (with the same network wiring) to rotate it.',
    });
  }
}
