import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import * as path from 'node:path';
import { Annotations, ArnFormat, CfnResource, CustomResource, Duration, Stack, Token, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct, type IConstruct } from 'constructs';

/** The repository root (this file is `<repo>/infra/lib/db-setup.ts`). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

/** Where `make package` (cargo-lambda) leaves the function: a directory holding `bootstrap`. */
export const DEFAULT_PACKAGE_DIR = path.join(REPO_ROOT, 'target', 'lambda', 'db-setup');

/** The migrations embedded in the binary; their hash is sent to the custom resource. */
export const DEFAULT_MIGRATIONS_DIR = path.join(REPO_ROOT, 'migrations');

/**
 * The file `make package` writes beside `bootstrap`: the MigrationsHash of the migrations
 * embedded in that binary (read from the binary by `scripts/migrations-hash.sh`).
 */
export const PACKAGE_HASH_FILE = 'migrations.sha256';

/** The group role an application user is made a member of (see docs/configuration.md). */
export type AppUserRole = 'readwrite' | 'readonly' | 'tablecreator';

/**
 * Secrets Manager's own rotation of a password user's secret, with the AWS hosted rotation
 * function for PostgreSQL (a serverless application Secrets Manager deploys in the
 * construct's VPC and subnets).
 */
export interface UserRotation {
  /**
   * - `single-user`: the rotation function logs in as the user and changes its own password.
   *   Connections opened with the old password keep working; new ones need the new one.
   * - `alternating-users`: the function logs in as the admin (the construct's `adminSecret`,
   *   which must hold `engine`, `host`, `username` and `password`) and alternates between
   *   `<user>` and `<user>_clone` (created as a member of `<user>`), so the previous
   *   credentials keep working until the next rotation. db-setup accepts either name.
   */
  readonly type: 'single-user' | 'alternating-users';
  /**
   * Days between rotations (at least 4 hours, at most 1000 days; `Duration.days(0)` sets no
   * schedule: rotation on demand only).
   * @default Duration.days(30)
   */
  readonly automaticallyAfter?: Duration;
  /**
   * Rotate as soon as the schedule is created or changed (CloudFormation's default), or wait
   * for the first scheduled window. Either way the schedule is created only after db-setup
   * has written a working secret.
   * @default true
   */
  readonly rotateImmediatelyOnUpdate?: boolean;
}

/** What every application user has. */
export interface AppUserBase {
  /** PostgreSQL role name of the user (a login role). */
  readonly username: string;
  /** What the user may do. */
  readonly role: AppUserRole;
  /**
   * Take over an existing role that db-setup did not create: without it, such a role is
   * refused. docs/users.md has the ownership rule and what adopting permits.
   * @default false
   */
  readonly adopt?: boolean;
}

/** A user that logs in with a password kept in a secret. */
export interface PasswordUser extends AppUserBase {
  /** @default 'password' */
  readonly auth?: 'password';
  /**
   * The secret the function writes the user's credentials to (RDS secret JSON).
   * Create it with any placeholder value: a value that does not log in is replaced.
   * With `rotation`, a secret of this account the construct can attach a rotation
   * schedule to (a `secretsmanager.Secret`), with no other rotation configured.
   */
  readonly secret: secretsmanager.ISecret;
  /** Rotate the secret with Secrets Manager's hosted rotation. @default no rotation */
  readonly rotation?: UserRotation;
}

/**
 * A user that logs in with IAM database authentication: a 15-minute token instead of a
 * password, over TLS only. It has no secret; grant its principals `rds-db:connect` with
 * {@link DbSetup.grantConnect}. The database needs IAM authentication turned on.
 */
export interface IamUser extends AppUserBase {
  readonly auth: 'iam';
  /** An IAM user has no secret. */
  readonly secret?: never;
  /** Nothing to rotate. */
  readonly rotation?: never;
}

/** An application user the function creates and keeps able to log in. */
export type AppUser = PasswordUser | IamUser;

/** One entry of `DB_SETUP_USERS` (docs/configuration.md). */
interface UserConfig {
  username: string;
  role: AppUserRole;
  secretId?: string;
  auth?: 'iam';
  adopt?: true;
}

/**
 * Checks what the types say, for callers the compiler does not check (JavaScript, casts,
 * configuration read from files): a password user has a secret, an IAM user has neither a
 * secret nor a rotation.
 */
function validateUser(user: AppUser): void {
  const u = user as { username: string; auth?: string; secret?: unknown; rotation?: unknown };
  const auth = u.auth ?? 'password';
  if (auth === 'iam') {
    if (u.secret !== undefined) {
      throw new Error(
        `DbSetup: user ${u.username} logs in with IAM (auth: 'iam') and has no password: remove its secret`,
      );
    }
    if (u.rotation !== undefined) {
      throw new Error(
        `DbSetup: user ${u.username} logs in with IAM (auth: 'iam'): there is no password to rotate, remove its rotation`,
      );
    }
  } else if (auth === 'password') {
    if (u.secret === undefined) {
      throw new Error(
        `DbSetup: user ${u.username} logs in with a password and needs a secret (or set auth: 'iam')`,
      );
    }
  } else {
    throw new Error(`DbSetup: user ${u.username}: auth must be 'password' or 'iam', not '${auth}'`);
  }
}

/** The user's entry in `DB_SETUP_USERS`: optional fields only when they differ from the default. */
function userConfig(user: AppUser): UserConfig {
  return {
    username: user.username,
    role: user.role,
    ...(user.auth === 'iam' ? { auth: 'iam' as const } : { secretId: user.secret.secretArn }),
    ...(user.adopt === true && { adopt: true as const }),
  };
}

/** The users that keep a password in a secret. */
const passwordUsers = (users: AppUser[]): PasswordUser[] =>
  users.filter((u): u is PasswordUser => u.auth !== 'iam');

/**
 * How CloudFormation reaches the function.
 * - `direct`: the function is the custom resource's ServiceToken and PUTs the response to
 *   the pre-signed S3 URL itself (needs an S3 route: a gateway endpoint in isolated subnets).
 *   No extra Lambda functions.
 * - `provider`: the CDK Provider framework (two small Node.js functions outside the VPC)
 *   invokes the function and answers CloudFormation; the function needs no S3 route.
 */
export type ResponseMode = 'direct' | 'provider';

/** Options of {@link DbSetup}. */
export interface DbSetupProps {
  /**
   * The function's code: a directory with the `bootstrap` binary, see {@link packagedCode}.
   * When it is a directory asset, its `migrations.sha256` (written by `make package`) must
   * equal the template's MigrationsHash, else synthesis fails: see {@link checkPackageMigrations}.
   */
  readonly code: lambda.Code;
  /** @default ARM_64 (must match how the binary was built) */
  readonly architecture?: lambda.Architecture;
  /** The VPC the database is reachable from. */
  readonly vpc: ec2.IVpc;
  /** @default the VPC's isolated subnets */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /**
   * The database (for example an `rds.DatabaseInstance`): the function is allowed in on
   * its default port (or `port`). When it is a construct, the custom resource also waits
   * for it, so it runs only once the database and its ingress rule exist.
   */
  readonly database: ec2.IConnectable;
  /**
   * The database's resource id, for {@link DbSetup.grantConnect} (IAM users): the instance's
   * `DbiResourceId` (`db-...`) or the cluster's `DbClusterResourceId` (`cluster-...`).
   * @default read from `database` when it is an `rds.DatabaseInstance` or
   * `rds.DatabaseCluster` (or an imported one given its resource id)
   */
  readonly databaseResourceId?: string;
  /** Secret with the admin (migrating) credentials, in the RDS secret JSON. */
  readonly adminSecret: secretsmanager.ISecret;
  /** @default the admin secret's `host` (DB_SETUP_DB_HOST) */
  readonly host?: string;
  /** @default the admin secret's `port`, else 5432 (DB_SETUP_DB_PORT) */
  readonly port?: number;
  /** @default the admin secret's `dbname`, else `postgres` (DB_SETUP_DB_NAME) */
  readonly databaseName?: string;
  /**
   * Application users to create and keep able to log in: password users (a secret, an
   * optional rotation) and IAM users. @default none
   */
  readonly users?: AppUser[];
  /** @default 'direct' */
  readonly responseMode?: ResponseMode;
  /**
   * Direct mode only: the id of the S3 managed prefix list of the stack's region (the one
   * named `com.amazonaws.<region>.s3`, e.g. `pl-63a5400a` in us-east-1). The function's only
   * way out to S3, for the response PUT to CloudFormation's pre-signed URL, is 443 to it,
   * through an S3 gateway endpoint or a NAT gateway alike.
   * @default looked up at deploy time: a small `AwsCustomResource` calls
   * `ec2:DescribeManagedPrefixLists`, so that synth stays offline and deterministic
   */
  readonly s3PrefixListId?: string;
  /**
   * Where the function and the rotation functions reach Secrets Manager when it is not
   * through an interface endpoint admitted with {@link DbSetup.allowEndpointAccess}: for a
   * NAT route, `ec2.Peer.anyIpv4()` (443 only; Secrets Manager's public addresses have no
   * prefix list).
   * @default none: call `allowEndpointAccess(endpoint)`; with neither, synth warns
   */
  readonly secretsManagerEgress?: ec2.IPeer;
  /**
   * Lambda timeout. Must cover the function's own worst case with its defaults: 3 connect
   * attempts of 10 s with backoff (~40 s), up to 60 s waiting for the migration lock held
   * by another run, one statement up to the 5 min statement timeout, and the 10 s margin
   * the deadline guard keeps to answer FAILED; 10 min leaves room for a few long statements.
   * @default Duration.minutes(10)
   */
  readonly timeout?: Duration;
  /**
   * The function waits on the network, not on CPU; 256 MB is several times what the Rust
   * process uses and gives enough CPU share for TLS and SCRAM in well under a second.
   * @default 256
   */
  readonly memorySize?: number;
  /**
   * How long CloudFormation waits for an answer before failing the resource. The one setting
   * for the whole deploy: it is the resource's `ServiceTimeout` (the function reads it, and a
   * chain of invocations answers FAILED before it runs out) and, in provider mode, the
   * framework's `totalTimeout`.
   * @default computed from `timeout` (35 min for a 10 min timeout), see {@link defaultServiceTimeout}
   */
  readonly serviceTimeout?: Duration;
  /**
   * Work longer than one invocation (`DB_SETUP_CONTINUE`): when an invocation's time for new
   * work is over, the function stops between two units of work (a transaction, a
   * no-transaction migration) and goes on in a new invocation, until `serviceTimeout`. In
   * direct mode the function invokes itself asynchronously (the construct grants
   * `lambda:InvokeFunction` on the function itself, nothing else); in provider mode the
   * framework's `isComplete` calls (the function again) go on, every `queryInterval`.
   * See docs/scale.md.
   * @default true
   */
  readonly continueAcrossInvocations?: boolean;
  /**
   * Provider mode with `continueAcrossInvocations`: the pause between two `isComplete` calls.
   * @default Duration.seconds(10)
   */
  readonly queryInterval?: Duration;
  /** @default ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /**
   * The migrations embedded in the binary: their hash is the `MigrationsHash` property,
   * so a deploy with new migrations sends Update.
   * @default `<repo>/migrations`
   */
  readonly migrationsDirectory?: string;
  /** `TransactionMode` property: `batch` or `each`. @default the function's (`batch`) */
  readonly transactionMode?: 'batch' | 'each';
  /** `TargetMigration` property: migrate up to this migration only. @default all */
  readonly targetMigration?: string;
  /** `ManageUsers` property: `false` skips the users step. @default true */
  readonly manageUsers?: boolean;
  /**
   * Take a manual RDS snapshot of `database` before migrating, when the deploy (its phase)
   * has migrations to run; never on a deploy with nothing pending. `database` must be an
   * `rds.DatabaseInstance` (a DB snapshot, `SnapshotDbInstance` property) or an
   * `rds.DatabaseCluster` (an Aurora cluster snapshot, `SnapshotDbCluster`), created here or
   * imported. The snapshot is named `db-setup-<stack>-<request id>` ({@link snapshotPrefix}),
   * the function waits until it is available, then migrates; `Data.Snapshot` names it. The
   * function's role gets the RDS permissions for exactly that instance or cluster and those
   * snapshot names (none without this option). See docs/snapshots.md.
   * @default false
   */
  readonly snapshotBeforeMigrate?: boolean;
  /**
   * CloudWatch namespace of the deploy metrics the function emits (Embedded Metric Format,
   * one record per CloudFormation request, by stack and request type).
   * @default 'DbSetup'
   */
  readonly metricsNamespace?: string;
  /**
   * The level of the function's own log lines (Lambda's advanced logging controls; the log
   * format is always JSON). `RUST_LOG` in `environment` overrides it.
   * @default lambda.ApplicationLogLevel.INFO
   */
  readonly applicationLogLevel?: lambda.ApplicationLogLevel;
  /**
   * Alarms on the deploys: `true` for the alarms without notification, or their options.
   * @default no alarms
   */
  readonly alarms?: boolean | DbSetupAlarmOptions;
  /**
   * More environment variables (for example `DB_SETUP_ROLE_PREFIX`, `RUST_LOG`).
   * The variables this construct sets cannot be overridden.
   */
  readonly environment?: Record<string, string>;
}

/** The alarms {@link DbSetup} can create. */
export interface DbSetupAlarmOptions {
  /** Notified when an alarm fires and when it clears. @default no notification */
  readonly topic?: sns.ITopic;
  /**
   * The duration alarm fires when an invocation lasts longer than this fraction of the
   * function's timeout (the deadline guard answers FAILED 10 s before it).
   * @default 0.8
   */
  readonly durationFraction?: number;
}

/** The default namespace of the deploy metrics (the function's default too). */
export const DEFAULT_METRICS_NAMESPACE = 'DbSetup';

/** The construct id CDK gives the one function of every `AwsCustomResource` in a stack. */
const AWS_CUSTOM_RESOURCE_SINGLETON = 'AWS679f53fac002430cb0da5b7982bd2287';

/** Lambda retries a failed asynchronous invocation this many times (its default, made explicit). */
const ASYNC_RETRIES = 2;
/** Lambda waits about 1 min before the first retry and 2 min before the second. */
const RETRY_DELAYS = Duration.minutes(3);
/** Slack for cold starts, ENI attachment and the response PUT. */
const SLACK = Duration.minutes(2);

/**
 * The ServiceTimeout that lets every attempt Lambda makes answer, and no more.
 *
 * CloudFormation invokes the function asynchronously. The function's deadline guard answers
 * FAILED before its own timeout, so a second attempt only happens when the process dies
 * without answering (crash, out of memory, runtime failure); Lambda then retries twice.
 * Worst case answered: 3 attempts × timeout + the retry delays + slack = 35 min for a
 * 10 min timeout, well under the 60 min default, which is what a stack waits when nothing
 * answers at all (and twice that when a failed Create is followed by its rollback Delete).
 */
export function defaultServiceTimeout(timeout: Duration): Duration {
  return Duration.seconds(
    (ASYNC_RETRIES + 1) * timeout.toSeconds() + RETRY_DELAYS.toSeconds() + SLACK.toSeconds(),
  );
}

/**
 * SHA-256 (hex) over the sorted names and contents of the `*.sql` files in `dir`.
 * Computed at synth time; any added, removed, renamed or edited migration changes it.
 */
export function hashMigrations(dir: string): string {
  if (!existsSync(dir)) {
    throw new Error(`migrations directory not found: ${dir}`);
  }
  const hash = createHash('sha256');
  const names = readdirSync(dir).filter((n) => n.endsWith('.sql')).sort();
  for (const name of names) {
    // Length-prefix each part so that no two different sets can produce the same stream.
    const content = readFileSync(path.join(dir, name));
    hash.update(`${Buffer.byteLength(name)}:${name}:${content.length}:`);
    hash.update(content);
  }
  return hash.digest('hex');
}

/**
 * Refuses a package built from other migrations than the template's.
 *
 * The function treats an Update whose MigrationsHash differs from its embedded migrations as a
 * rollback and runs nothing. A template synthesized from new `migrations/` with an old binary
 * (`cdk deploy` without `make package`) would look the same from inside the function: its
 * deploy would succeed without migrating. So the package's hash (`migrations.sha256` beside
 * `bootstrap`, written by `make package` from the binary) must equal `migrationsHash`.
 */
export function checkPackageMigrations(dir: string, migrationsHash: string, migrationsDir: string): void {
  const file = path.join(dir, PACKAGE_HASH_FILE);
  if (!existsSync(file)) {
    throw new Error(
      `${file} not found: it tells which migrations the function's binary embeds. ` +
        'Run `make package` (it builds the function and writes it).',
    );
  }
  const packaged = readFileSync(file, 'utf8').trim();
  if (!/^[0-9a-f]{64}$/.test(packaged)) {
    throw new Error(`${file} does not hold a SHA-256 (hex): run \`make package\` again.`);
  }
  if (packaged !== migrationsHash) {
    throw new Error(
      `the function package ${dir} was built with other migrations (MigrationsHash ${packaged}) ` +
        `than ${migrationsDir} holds (${migrationsHash}): deployed, the function would take the Update ` +
        'for a rollback and run no migration. Run `make package`, then synthesize again.',
    );
  }
}

/** A port number (or number token) as an environment value. */
function portString(port: number): string {
  return Token.isUnresolved(port) ? Token.asString(port) : String(port);
}

/** ELF `e_machine` values of the two Lambda architectures. */
const ELF_MACHINE: Record<string, number> = { arm64: 0xb7, x86_64: 0x3e };

/**
 * The function's code from a cargo-lambda package directory (`make package`), checked:
 * the directory must hold a `bootstrap` ELF binary built for `architecture`. A missing or
 * wrong-architecture binary would otherwise only show at deploy time, as a custom resource
 * that never answers.
 */
export function packagedCode(dir: string, architecture: lambda.Architecture): lambda.Code {
  const bootstrap = path.join(dir, 'bootstrap');
  if (!existsSync(bootstrap)) {
    throw new Error(
      `${bootstrap} not found: run \`make package\` first (it builds the function with cargo-lambda).`,
    );
  }
  const header = Buffer.alloc(20);
  const fd = openSync(bootstrap, 'r');
  try {
    readSync(fd, header, 0, header.length, 0);
  } finally {
    closeSync(fd);
  }
  if (header.readUInt32BE(0) !== 0x7f454c46) {
    throw new Error(`${bootstrap} is not an ELF binary: run \`make package\` again.`);
  }
  const machine = header.readUInt16LE(18);
  if (machine !== ELF_MACHINE[architecture.name]) {
    const built = Object.keys(ELF_MACHINE).find((k) => ELF_MACHINE[k] === machine) ?? `e_machine ${machine}`;
    throw new Error(
      `${bootstrap} is built for ${built} but the function is ${architecture.name}: ` +
        `rebuild with \`make package\` for ${architecture.name}, or synthesize with -c arch=${built}.`,
    );
  }
  return lambda.Code.fromAsset(dir);
}

/**
 * The db-setup function and the custom resource that runs it on every deploy: it applies
 * the embedded forward-only migrations, creates the application users and writes their
 * credentials to their secrets.
 *
 * The custom resource depends on the database construct and on the VPC (with the endpoints
 * created through it), so it runs after them on Create and is deleted before them: its
 * Delete still needs Secrets Manager and, in direct mode, the S3 route to answer.
 *
 * A user's `rotation` attaches Secrets Manager's hosted rotation to its secret; the
 * rotation schedule depends on the custom resource, so no rotation starts before db-setup
 * has created the user and written a secret that logs in. IAM users (`auth: 'iam'`) have
 * no secret; {@link DbSetup.grantConnect} lets a principal log in as one.
 */
export class DbSetup extends Construct {
  /** The function (runtime `provided.al2023`, handler `bootstrap`). */
  public readonly function: lambda.Function;
  /** The custom resource (`Custom::DbSetup`). */
  public readonly resource: CustomResource;
  /** The Provider framework, in `provider` mode only. */
  public readonly provider?: cr.Provider;
  /**
   * The function's security group: allowed into the database; egress only to the database,
   * Secrets Manager and, in direct mode, S3's prefix list (docs/deploy.md, "Network egress").
   */
  public readonly securityGroup: ec2.SecurityGroup;
  /** Direct mode with `continueAcrossInvocations`: `lambda:InvokeFunction` on the function itself. */
  public readonly selfInvokePolicy?: iam.Policy;
  /** With `alarms`: fires on any failed deploy (the `Failures` metric) or function error. */
  public failureAlarm?: cloudwatch.Alarm;
  /** With `alarms`: fires when an invocation comes near the function's timeout. */
  public durationAlarm?: cloudwatch.Alarm;
  /**
   * The security group of the hosted rotation functions (allowed into the database; egress to
   * the database and Secrets Manager only), when a user has a `rotation`.
   */
  public readonly rotationSecurityGroup?: ec2.SecurityGroup;
  /** The rotation schedules, by username. */
  public readonly rotationSchedules: Record<string, secretsmanager.RotationSchedule> = {};
  /**
   * The contract-phase custom resource (`Custom::DbSetupContract`), once
   * {@link DbSetup.runContractAfter} has been called: it runs the migrations from the first
   * pending `-- db-setup: phase=contract` one on, after the application's resources.
   */
  public contractResource?: CustomResource;

  private readonly users: AppUser[];
  private readonly resourceSettings: {
    serviceToken: string;
    serviceTimeout: Duration;
    properties: Record<string, string>;
    id: string;
  };
  private readonly database: ec2.IConnectable;
  private readonly databaseResourceId?: string;
  private readonly secretsManagerEgress?: ec2.IPeer;
  private endpointAdmitted = false;

  constructor(scope: Construct, id: string, props: DbSetupProps) {
    super(scope, id);
    const mode = props.responseMode ?? 'direct';
    const users = props.users ?? [];
    const timeout = props.timeout ?? Duration.minutes(10);
    const serviceTimeout = props.serviceTimeout ?? defaultServiceTimeout(timeout);
    if (serviceTimeout.toSeconds() > 3600 || serviceTimeout.toSeconds() < timeout.toSeconds()) {
      throw new Error('serviceTimeout must lie between the Lambda timeout and 1 hour');
    }
    const continuing = props.continueAcrossInvocations ?? true;
    const names = new Set(users.map((u) => u.username));
    if (names.size !== users.length) {
      throw new Error('DbSetup: usernames must be unique');
    }
    users.forEach(validateUser);
    this.users = users;
    this.database = props.database;
    this.databaseResourceId = props.databaseResourceId;

    if (mode === 'provider' && props.s3PrefixListId !== undefined) {
      throw new Error(
        'DbSetup: s3PrefixListId is for direct mode only: in provider mode the function answers no S3 URL (remove it)',
      );
    }
    if (props.s3PrefixListId !== undefined && !Token.isUnresolved(props.s3PrefixListId) && !/^pl-[0-9a-f]+$/.test(props.s3PrefixListId)) {
      throw new Error(`DbSetup: s3PrefixListId must be a prefix list id (pl-...), not '${props.s3PrefixListId}'`);
    }

    // Egress only where the function must go: the database (allowFrom below adds the rule
    // on both sides), Secrets Manager (allowEndpointAccess, or secretsManagerEgress) and, in
    // direct mode, S3 for the response (its managed prefix list).
    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'db-setup function',
      allowAllOutbound: false,
    });
    const dbPort =
      props.port !== undefined
        ? ec2.Port.tcp(props.port)
        : (props.database.connections.defaultPort ?? ec2.Port.tcp(5432));
    props.database.connections.allowFrom(this.securityGroup, dbPort, 'db-setup function');
    this.secretsManagerEgress = props.secretsManagerEgress;
    if (this.secretsManagerEgress !== undefined) {
      this.securityGroup.addEgressRule(this.secretsManagerEgress, ec2.Port.tcp(443), 'Secrets Manager');
    }
    if (mode === 'direct') {
      const s3 = ec2.Peer.prefixList(
        props.s3PrefixListId ?? this.lookUpS3PrefixList(props.logRetention ?? logs.RetentionDays.ONE_MONTH),
      );
      this.securityGroup.addEgressRule(s3, ec2.Port.tcp(443), 'S3: the response to CloudFormation');
    }
    this.node.addValidation({ validate: () => this.warnWithoutSecretsManager() });

    const stack = Stack.of(this);
    const ownEnv: Record<string, string> = {
      DB_SETUP_ADMIN_SECRET_ID: props.adminSecret.secretArn,
      DB_SETUP_USERS: stack.toJsonString(
        users.map(userConfig),
      ),
      DB_SETUP_RESPONSE_MODE: mode,
      DB_SETUP_TLS: 'verify-full',
      DB_SETUP_METRICS_NAMESPACE: props.metricsNamespace ?? DEFAULT_METRICS_NAMESPACE,
      DB_SETUP_CONTINUE: String(continuing),
      ...(props.host !== undefined && { DB_SETUP_DB_HOST: props.host }),
      ...(props.port !== undefined && { DB_SETUP_DB_PORT: portString(props.port) }),
      ...(props.databaseName !== undefined && { DB_SETUP_DB_NAME: props.databaseName }),
    };
    const clash = Object.keys(props.environment ?? {}).filter((k) => k in ownEnv);
    if (clash.length > 0) {
      throw new Error(`DbSetup: environment may not override ${clash.join(', ')}`);
    }
    const environment = { ...props.environment, ...ownEnv };

    this.function = new lambda.Function(this, 'Function', {
      description: 'db-setup: migrations and application users (CloudFormation custom resource)',
      runtime: lambda.Runtime.PROVIDED_AL2023,
      handler: 'bootstrap',
      code: props.code,
      architecture: props.architecture ?? lambda.Architecture.ARM_64,
      timeout,
      memorySize: props.memorySize ?? 256,
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets ?? { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      securityGroups: [this.securityGroup],
      environment,
      logGroup: new logs.LogGroup(this, 'LogGroup', {
        retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      }),
      // Lambda's advanced logging controls: the function reads AWS_LAMBDA_LOG_FORMAT and
      // AWS_LAMBDA_LOG_LEVEL (RUST_LOG and DB_SETUP_LOG_FORMAT override them).
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: props.applicationLogLevel ?? lambda.ApplicationLogLevel.INFO,
      // Asynchronous invocations (direct mode): retry a dead process (the handler is
      // idempotent), and drop an event too old for any attempt to answer before
      // ServiceTimeout, so that no run starts after CloudFormation has given up.
      retryAttempts: ASYNC_RETRIES,
      maxEventAge: Duration.seconds(Math.max(60, serviceTimeout.toSeconds() - timeout.toSeconds())),
    });
    // lambda.Function in a VPC attaches the managed AWSLambdaBasicExecutionRole and
    // AWSLambdaVPCAccessExecutionRole (logs, ENIs): nothing else is wildcarded.
    Validations.of(this.function).acknowledge(
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
        reason: 'The AWS managed policy for writing the function log: the least an AWS Lambda function needs.',
      },
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]',
        reason: 'The AWS managed policy for the VPC network interfaces of a Lambda function in a VPC, as required.',
      },
    );
    this.grantSecrets(props.adminSecret, users);
    if (props.alarms) {
      const options = props.alarms === true ? {} : props.alarms;
      this.createAlarms(options, timeout, props.metricsNamespace ?? DEFAULT_METRICS_NAMESPACE);
    }

    const migrationsDir = props.migrationsDirectory ?? DEFAULT_MIGRATIONS_DIR;
    const migrationsHash = hashMigrations(migrationsDir);
    // A directory asset is the package itself: check that it embeds these migrations. (Code
    // from elsewhere, such as an S3 object, cannot be seen at synth time.)
    if (props.code instanceof lambda.AssetCode && !props.code.path.endsWith('.zip')) {
      checkPackageMigrations(props.code.path, migrationsHash, migrationsDir);
    }

    const properties: Record<string, string> = {
      MigrationsHash: migrationsHash,
      // Not read by the function: its change (a new user, another host...) sends Update,
      // so that the new configuration is applied on this deploy, not on the next migration.
      Config: stack.toJsonString(environment),
      ...(props.transactionMode !== undefined && { TransactionMode: props.transactionMode }),
      ...(props.targetMigration !== undefined && { TargetMigration: props.targetMigration }),
      ...(props.manageUsers !== undefined && { ManageUsers: String(props.manageUsers) }),
      ...(props.snapshotBeforeMigrate === true && this.grantSnapshots(props.database)),
    };

    let serviceToken = this.function.functionArn;
    if (mode === 'direct' && continuing) {
      // A policy of its own, attached to the role: the function does not depend on it (a
      // statement in the role's default policy would make the function depend on its own ARN).
      this.selfInvokePolicy = new iam.Policy(this, 'SelfInvokePolicy', {
        statements: [
          new iam.PolicyStatement({
            sid: 'ContinueInANewInvocation',
            actions: ['lambda:InvokeFunction'],
            resources: [this.function.functionArn],
          }),
        ],
      });
      this.selfInvokePolicy.attachToRole(this.function.role!);
    }
    if (mode === 'provider') {
      // The framework's functions stay outside the VPC: they call the Lambda API and S3.
      const logRetention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
      this.provider = new cr.Provider(this, 'Provider', {
        onEventHandler: this.function,
        ...(continuing && {
          isCompleteHandler: this.function,
          queryInterval: props.queryInterval ?? Duration.seconds(10),
          totalTimeout: serviceTimeout,
          // Every event, but never the execution data: it holds the ResponseURL (a bearer token).
          disableWaiterStateMachineLogging: false,
          waiterStateMachineLogOptions: {
            includeExecutionData: false,
            destination: new logs.LogGroup(this, 'ProviderWaiterLogGroup', { retention: logRetention }),
            level: sfn.LogLevel.ALL,
          },
        }),
        logGroup: new logs.LogGroup(this, 'ProviderLogGroup', {
          retention: logRetention,
        }),
      });
      serviceToken = this.provider.serviceToken;
      const frameworkFn = this.provider.node.findChild('framework-onEvent');
      const fnLogicalId = stack.getLogicalId(this.function.node.defaultChild as lambda.CfnFunction);
      Validations.of(frameworkFn).acknowledge(
        {
          id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
          reason: 'CDK Provider framework function: the AWS managed policy for writing its log.',
        },
        {
          id: `AwsSolutions-IAM5[Resource::<${fnLogicalId}.Arn>:*]`,
          reason: 'CDK Provider framework: may invoke any version or alias of the db-setup function, and only that function.',
        },
      );
      if (continuing) {
        const logicalId = (child: string) =>
          stack.getLogicalId(this.provider!.node.findChild(child).node.defaultChild as lambda.CfnFunction);
        for (const child of ['framework-isComplete', 'framework-onTimeout']) {
          Validations.of(this.provider.node.findChild(child)).acknowledge({
            id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
            reason: 'CDK Provider framework function: the AWS managed policy for writing its log.',
          });
        }
        for (const child of ['framework-isComplete', 'framework-onTimeout']) {
          Validations.of(this.provider.node.findChild(child)).acknowledge({
            id: `AwsSolutions-IAM5[Resource::<${fnLogicalId}.Arn>:*]`,
            reason: 'CDK Provider framework: may invoke any version or alias of the db-setup function, and only that function.',
          });
        }
        const waiter = this.provider.node.findChild('waiter-state-machine');
        Validations.of(waiter).acknowledge(
          {
            id: `AwsSolutions-IAM5[Resource::<${logicalId('framework-isComplete')}.Arn>:*]`,
            reason: "CDK Provider framework waiter: invokes the framework's own isComplete function (any version), only it.",
          },
          {
            id: `AwsSolutions-IAM5[Resource::<${logicalId('framework-onTimeout')}.Arn>:*]`,
            reason: "CDK Provider framework waiter: invokes the framework's own onTimeout function (any version), only it.",
          },
          {
            id: 'AwsSolutions-IAM5[Resource::*]',
            reason: 'Step Functions log delivery to CloudWatch Logs: logs:CreateLogDelivery and its companions take no resource ARN (the AWS documented policy for state machine logging).',
          },
          {
            id: 'AwsSolutions-SF2',
            reason: 'The Provider framework does not expose X-Ray tracing for its waiter; its every event is logged (AwsSolutions-SF1), and each call it makes is in the function log.',
          },
        );
      }
    }

    // The construct id differs per mode: CloudFormation cannot change the ServiceToken of
    // an existing custom resource, so switching modes replaces the resource instead.
    this.resourceSettings = {
      serviceToken,
      serviceTimeout,
      properties,
      id: mode === 'direct' ? 'ContractResource' : 'ProviderContractResource',
    };
    this.resource = new CustomResource(this, mode === 'direct' ? 'Resource' : 'ProviderResource', {
      serviceToken,
      resourceType: 'Custom::DbSetup',
      serviceTimeout,
      properties,
    });
    if (this.selfInvokePolicy !== undefined) {
      this.resource.node.addDependency(this.selfInvokePolicy);
    }
    // Run after (and be deleted before) the database with its ingress rule and the VPC's
    // endpoints: the function needs all of them to do its work and to answer.
    if (Construct.isConstruct(props.database)) {
      this.resource.node.addDependency(props.database);
    }
    this.resource.node.addDependency(props.vpc);
    // ... and after the function's egress rules (the ones added later too), which it needs likewise.
    this.resource.node.addDependency(this.securityGroup);

    const rotated = passwordUsers(users).filter((u) => u.rotation !== undefined);
    if (rotated.length > 0) {
      this.rotationSecurityGroup = new ec2.SecurityGroup(this, 'RotationSecurityGroup', {
        vpc: props.vpc,
        description: 'Secrets Manager hosted rotation functions of the db-setup users',
        // Like the function's, minus S3: the database and Secrets Manager only.
        allowAllOutbound: false,
      });
      props.database.connections.allowFrom(this.rotationSecurityGroup, dbPort, 'secret rotation functions');
      if (this.secretsManagerEgress !== undefined) {
        this.rotationSecurityGroup.addEgressRule(this.secretsManagerEgress, ec2.Port.tcp(443), 'Secrets Manager');
      }
      for (const user of rotated) {
        this.rotationSchedules[user.username] = this.addRotation(user, user.rotation!, props);
      }
    }
  }

  /**
   * Two-phase deploys: `constructs` (the application's resources) are created or updated
   * only after the expand phase, which runs the pending migrations up to, not including, the
   * first pending `-- db-setup: phase=contract` one (and the users step). Switches the
   * construct to phases: {@link DbSetup.resource} sends `Phase: expand`, and the contract
   * resource ({@link DbSetup.contractResource}) is created, after the expand one.
   */
  public runExpandBefore(...constructs: IConstruct[]): void {
    this.phases();
    for (const construct of constructs) {
      construct.node.addDependency(this.resource);
    }
  }

  /**
   * Two-phase deploys: the contract phase (`Phase: contract`, the pending migrations from the
   * first `phase=contract` one on, in number order; no users step) runs only after
   * `constructs` (the application's resources) are created or updated, so the old
   * application version has stopped serving before anything it uses is removed. Returns the
   * contract custom resource.
   *
   * A rollback never runs a contract migration: CloudFormation rolls the contract resource
   * back with the previous template's properties, whose `MigrationsHash` is not the new
   * code's (the function runs nothing), and a resource created by the failed deploy is only
   * deleted. But once the contract phase has succeeded, an application rollback (a later
   * resource of the same deploy failing) brings back an application version whose columns
   * may be gone: the database is forward-only, so fix forward (docs/migrations.md).
   */
  public runContractAfter(...constructs: IConstruct[]): CustomResource {
    const contract = this.phases();
    for (const construct of constructs) {
      contract.node.addDependency(construct);
    }
    return contract;
  }

  private phases(): CustomResource {
    if (this.contractResource === undefined) {
      (this.resource.node.defaultChild as CfnResource).addPropertyOverride('Phase', 'expand');
      const { serviceToken, serviceTimeout, properties, id } = this.resourceSettings;
      this.contractResource = new CustomResource(this, id, {
        serviceToken,
        resourceType: 'Custom::DbSetupContract',
        serviceTimeout,
        // The users step belongs to the expand phase: the new application logs in with them.
        properties: { ...properties, Phase: 'contract', ManageUsers: 'false' },
      });
      this.contractResource.node.addDependency(this.resource);
    }
    return this.contractResource;
  }

  /**
   * Admits the function and the rotation functions into an interface endpoint (Secrets
   * Manager's, in isolated subnets) on its default port: the ingress rule on the endpoint's
   * security group and the egress rule on theirs (their only way to Secrets Manager).
   *
   * With `{ functionOnly: true }`, the function only: for the endpoints only it calls, the
   * Lambda API's (direct mode with `continueAcrossInvocations`: the function invokes itself)
   * and RDS's (`snapshotBeforeMigrate`).
   */
  public allowEndpointAccess(endpoint: ec2.IConnectable, options: { functionOnly?: boolean } = {}): void {
    endpoint.connections.allowDefaultPortFrom(this.securityGroup, 'db-setup function');
    if (options.functionOnly === true) {
      return;
    }
    if (this.rotationSecurityGroup !== undefined) {
      endpoint.connections.allowDefaultPortFrom(this.rotationSecurityGroup, 'secret rotation functions');
    }
    this.endpointAdmitted = true;
  }

  /**
   * The S3 managed prefix list of the stack's region, read at deploy time: CloudFormation has
   * no attribute or parameter that holds it, and a context lookup would need an AWS account
   * at synth. One `ec2:DescribeManagedPrefixLists` call by CDK's `AwsCustomResource` (a
   * Node.js function outside the VPC, with the SDK of its runtime), on Create and Update.
   */
  private lookUpS3PrefixList(logRetention: logs.RetentionDays): string {
    const name = `com.amazonaws.${Stack.of(this).region}.s3`;
    const call: cr.AwsSdkCall = {
      service: 'EC2',
      action: 'DescribeManagedPrefixLists',
      parameters: { Filters: [{ Name: 'prefix-list-name', Values: [name] }] },
      outputPaths: ['PrefixLists.0.PrefixListId'],
      physicalResourceId: cr.PhysicalResourceId.fromResponse('PrefixLists.0.PrefixListId'),
    };
    const lookup = new cr.AwsCustomResource(this, 'S3PrefixList', {
      onCreate: call,
      onUpdate: call,
      policy: cr.AwsCustomResourcePolicy.fromSdkCalls({ resources: cr.AwsCustomResourcePolicy.ANY_RESOURCE }),
      installLatestAwsSdk: false,
      logGroup: new logs.LogGroup(this, 'S3PrefixListLogGroup', { retention: logRetention }),
    });
    const singleton = Stack.of(this).node.tryFindChild(AWS_CUSTOM_RESOURCE_SINGLETON);
    if (singleton !== undefined) {
      Validations.of(singleton).acknowledge(
        {
          id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
          reason: "CDK AwsCustomResource function (the S3 prefix list lookup): the AWS managed policy for writing its log.",
        },
      );
    }
    Validations.of(lookup).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'ec2:DescribeManagedPrefixLists (read only) supports no resource-level permission.',
    });
    return lookup.getResponseField('PrefixLists.0.PrefixListId');
  }

  /** A synth warning when nothing lets the function out to Secrets Manager. */
  private warnWithoutSecretsManager(): string[] {
    if (!this.endpointAdmitted && this.secretsManagerEgress === undefined) {
      Annotations.of(this).addWarningV2(
        'db-setup:no-secrets-manager-route',
        'DbSetup: the function has no route to Secrets Manager (its security group allows no other egress): ' +
          'call allowEndpointAccess(secretsManagerEndpoint) for an interface endpoint, or set ' +
          'secretsManagerEgress (ec2.Peer.anyIpv4() for a NAT route)',
      );
    }
    return [];
  }

  /**
   * Grants `rds-db:connect` as an IAM user (`auth: 'iam'`) of this construct:
   * `arn:<partition>:rds-db:<region>:<account>:dbuser:<resource id>/<username>`, the resource
   * id being the instance's `DbiResourceId` (or the cluster's resource id), as
   * `rds.DatabaseInstance.grantConnect` builds it. The database must have IAM
   * authentication turned on (`iamAuthentication: true`), and the client must use TLS.
   */
  public grantConnect(grantee: iam.IGrantable, username: string): iam.Grant {
    const user = this.users.find((u) => u.username === username);
    if (user === undefined) {
      throw new Error(`DbSetup.grantConnect: ${username} is not one of this construct's users`);
    }
    if (user.auth !== 'iam') {
      throw new Error(
        `DbSetup.grantConnect: ${username} logs in with a password, not IAM: set auth: 'iam' on the user to use IAM authentication`,
      );
    }
    const iamAuth = iamAuthenticationOf(this.database);
    if (iamAuth === false) {
      throw new Error(
        `DbSetup.grantConnect: the database has IAM authentication turned off: set iamAuthentication: true on it`,
      );
    }
    const resourceId = this.databaseResourceId ?? resourceIdOf(this.database);
    if (resourceId === undefined) {
      throw new Error(
        'DbSetup.grantConnect needs the database resource id: pass an rds.DatabaseInstance or DatabaseCluster ' +
          'as `database`, or `databaseResourceId` (DbiResourceId `db-...` or cluster resource id `cluster-...`)',
      );
    }
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['rds-db:connect'],
      resourceArns: [
        Stack.of(this).formatArn({
          service: 'rds-db',
          resource: 'dbuser',
          resourceName: `${resourceId}/${username}`,
          arnFormat: ArnFormat.COLON_RESOURCE_NAME,
        }),
      ],
    });
  }

  /**
   * Attaches the hosted rotation to the user's secret. The schedule depends on the custom
   * resource: CloudFormation rotates (or tests the rotation) as soon as it creates the
   * schedule, and the rotation function can only start from a secret that logs in, which
   * db-setup writes; the dependency also orders it after the ingress rules.
   */
  private addRotation(user: PasswordUser, rotation: UserRotation, props: DbSetupProps) {
    const options = {
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets ?? { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      securityGroups: [this.rotationSecurityGroup!],
    };
    const hostedRotation =
      rotation.type === 'single-user'
        ? secretsmanager.HostedRotation.postgreSqlSingleUser(options)
        : secretsmanager.HostedRotation.postgreSqlMultiUser({ ...options, masterSecret: props.adminSecret });
    const schedule = new secretsmanager.RotationSchedule(this, `Rotation-${user.username}`, {
      secret: user.secret,
      hostedRotation,
      automaticallyAfter: rotation.automaticallyAfter ?? Duration.days(30),
      rotateImmediatelyOnUpdate: rotation.rotateImmediatelyOnUpdate,
    });
    schedule.node.addDependency(this.resource);
    // ... and after the rotation functions' egress rules (the endpoint's is added after the constructor).
    schedule.node.addDependency(this.rotationSecurityGroup!);
    return schedule;
  }

  /**
   * `GetSecretValue` on the admin and user secrets; `PutSecretValue`, `DescribeSecret`,
   * `UpdateSecretVersionStage` on the user secrets only; KMS only for customer-managed keys.
   */
  /**
   * The failure alarm sums the `Failures` metric of each request type (the function emits it
   * for every CloudFormation request, by stack and request type) with the function's `Errors`
   * (a process that died, or a failure in provider mode); the duration alarm watches the
   * function's maximum `Duration` against a fraction of its timeout.
   */
  private createAlarms(options: DbSetupAlarmOptions, timeout: Duration, namespace: string) {
    const fraction = options.durationFraction ?? 0.8;
    if (!(fraction > 0 && fraction <= 1)) {
      throw new Error('DbSetup: alarms.durationFraction must lie in (0, 1]');
    }
    const period = Duration.minutes(5);
    const failures = (requestType: string) =>
      new cloudwatch.Metric({
        namespace,
        metricName: 'Failures',
        dimensionsMap: { Stack: Stack.of(this).stackName, RequestType: requestType },
        statistic: 'Sum',
        period,
      });
    this.failureAlarm = new cloudwatch.Alarm(this, 'FailureAlarm', {
      alarmDescription:
        'db-setup: a deploy failed (migrations or users); the Reason is in the stack events and the function log',
      metric: new cloudwatch.MathExpression({
        expression: 'FILL(c, 0) + FILL(u, 0) + FILL(d, 0) + FILL(e, 0)',
        usingMetrics: {
          c: failures('Create'),
          u: failures('Update'),
          d: failures('Delete'),
          e: this.function.metricErrors({ statistic: 'Sum', period }),
        },
        label: 'failed deploys and function errors',
        period,
      }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.durationAlarm = new cloudwatch.Alarm(this, 'DurationAlarm', {
      alarmDescription: `db-setup: an invocation lasted more than ${Math.round(fraction * 100)}% of the function timeout`,
      metric: this.function.metricDuration({ statistic: 'Maximum', period }),
      threshold: Math.round(timeout.toMilliseconds() * fraction),
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (options.topic) {
      const action = new cwActions.SnsAction(options.topic);
      for (const alarm of [this.failureAlarm, this.durationAlarm]) {
        alarm.addAlarmAction(action);
        alarm.addOkAction(action);
      }
    }
  }

  /**
   * The snapshot before migrating: the property naming the instance or cluster, and the
   * function's RDS permissions on exactly it and on this stack's snapshot names:
   * `rds:CreateDB[Cluster]Snapshot` and `rds:DescribeDB[Cluster]Snapshots` on both, and
   * `rds:AddTagsToResource` on the snapshots only (an instance or cluster with
   * `copyTagsToSnapshot`, CDK's default, tags its snapshots in the caller's name).
   */
  private grantSnapshots(database: ec2.IConnectable): Record<string, string> {
    const db = database as { instanceIdentifier?: string; clusterIdentifier?: string };
    const stack = Stack.of(this);
    const prefix = Token.isUnresolved(stack.stackName) ? SNAPSHOT_PREFIX : snapshotPrefix(stack.stackName);
    const arn = (resource: string, resourceName: string) =>
      stack.formatArn({ service: 'rds', resource, resourceName, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
    let kind: { property: string; source: string; snapshot: string; create: string; describe: string };
    if ('instanceIdentifier' in db && db.instanceIdentifier !== undefined) {
      kind = {
        property: 'SnapshotDbInstance',
        source: arn('db', db.instanceIdentifier),
        snapshot: arn('snapshot', `${prefix}-*`),
        create: 'rds:CreateDBSnapshot',
        describe: 'rds:DescribeDBSnapshots',
      };
    } else if ('clusterIdentifier' in db && db.clusterIdentifier !== undefined) {
      kind = {
        property: 'SnapshotDbCluster',
        source: arn('cluster', db.clusterIdentifier),
        snapshot: arn('cluster-snapshot', `${prefix}-*`),
        create: 'rds:CreateDBClusterSnapshot',
        describe: 'rds:DescribeDBClusterSnapshots',
      };
    } else {
      throw new Error(
        'DbSetup: snapshotBeforeMigrate needs `database` to be an rds.DatabaseInstance or rds.DatabaseCluster ' +
          '(created in this app or imported): the function snapshots that instance or cluster',
      );
    }
    this.function.addToRolePolicy(
      new iam.PolicyStatement({ actions: [kind.create, kind.describe], resources: [kind.source, kind.snapshot] }),
    );
    this.function.addToRolePolicy(new iam.PolicyStatement({ actions: ['rds:AddTagsToResource'], resources: [kind.snapshot] }));
    const flat = stack.resolve(kind.snapshot) as unknown;
    Validations.of(this.function).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${nagResource(flat)}]`,
      reason:
        'Snapshots are named db-setup-<stack>-<CloudFormation request id> when a deploy runs: the request id is not ' +
        "known at synth time, so the ARN ends in a wildcard after this stack's prefix.",
    });
    const identifier = 'instanceIdentifier' in db ? db.instanceIdentifier : db.clusterIdentifier;
    return { [kind.property]: identifier as string };
  }

  private grantSecrets(adminSecret: secretsmanager.ISecret, users: AppUser[]): void {
    const arn = (s: secretsmanager.ISecret) => s.secretFullArn ?? `${s.secretArn}-??????`;
    const userSecrets = passwordUsers(users).map((u) => u.secret);
    this.function.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['secretsmanager:GetSecretValue'],
        resources: [adminSecret, ...userSecrets].map(arn),
      }),
    );
    this.grantKeyViaSecretsManager(adminSecret, ['kms:Decrypt']);
    if (userSecrets.length === 0) {
      return;
    }
    this.function.addToRolePolicy(
      new iam.PolicyStatement({
        actions: [
          'secretsmanager:PutSecretValue',
          'secretsmanager:DescribeSecret',
          'secretsmanager:UpdateSecretVersionStage',
        ],
        resources: userSecrets.map(arn),
      }),
    );
    for (const secret of userSecrets) {
      this.grantKeyViaSecretsManager(secret, ['kms:Decrypt', 'kms:GenerateDataKey']);
    }
  }

  /**
   * A customer-managed key of a secret: `actions` on that key only, and only through Secrets
   * Manager in this stack's region (`kms:ViaService`): the function never uses the key
   * directly, so its role cannot decrypt anything else with it.
   */
  private grantKeyViaSecretsManager(secret: secretsmanager.ISecret, actions: string[]): void {
    const key = secret.encryptionKey;
    if (key === undefined) {
      return;
    }
    this.function.addToRolePolicy(
      new iam.PolicyStatement({
        actions,
        resources: [key.keyArn],
        conditions: {
          StringEquals: { 'kms:ViaService': `secretsmanager.${Stack.of(this).region}.amazonaws.com` },
        },
      }),
    );
  }
}

/**
 * The resource id of an `rds.DatabaseInstance` (`DbiResourceId`) or `rds.DatabaseCluster`,
 * read by duck typing (the database prop is any `ec2.IConnectable`); undefined for anything
 * else, and for an imported database given without it.
 */
/** The start of every snapshot name the function takes (see {@link snapshotPrefix}). */
export const SNAPSHOT_PREFIX = 'db-setup';

/**
 * The part of the function's snapshot names (`<prefix>-<request id>`) that a stack's name
 * fixes, as the function builds it (src/snapshot.rs): `db-setup-<stack name>`, lowercased,
 * each run of other characters than letters and digits one hyphen, at most 128 characters.
 */
export function snapshotPrefix(stackName: string): string {
  const stack = stackName
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+/, '')
    .slice(0, 128)
    .replace(/-+$/, '');
  return stack === '' ? SNAPSHOT_PREFIX : `${SNAPSHOT_PREFIX}-${stack}`;
}

/**
 * A resolved template value as cdk-nag writes it in a finding's id: `{Ref: X}` as `<X>`,
 * `Fn::Join` joined.
 */
function nagResource(value: unknown): string {
  if (typeof value === 'string') return value;
  const v = value as Record<string, any>;
  if (v.Ref !== undefined) return `<${v.Ref}>`;
  if (v['Fn::Join'] !== undefined) return (v['Fn::Join'][1] as unknown[]).map(nagResource).join(v['Fn::Join'][0]);
  return JSON.stringify(value);
}

function resourceIdOf(database: ec2.IConnectable): string | undefined {
  const db = database as { instanceResourceId?: string; clusterResourceIdentifier?: string };
  if ('instanceResourceId' in db) {
    return db.instanceResourceId;
  }
  try {
    // An imported cluster throws when its resource id was not given.
    return db.clusterResourceIdentifier;
  } catch {
    return undefined;
  }
}

/**
 * Whether IAM authentication is on, when the database is a construct whose CloudFormation
 * resource this stack defines (`AWS::RDS::DBInstance` or `AWS::RDS::DBCluster`); undefined
 * when it cannot be known here (an imported database).
 */
function iamAuthenticationOf(database: ec2.IConnectable): boolean | undefined {
  if (!Construct.isConstruct(database)) {
    return undefined;
  }
  const cfn = database.node.defaultChild;
  if (!CfnResource.isCfnResource(cfn) || !['AWS::RDS::DBInstance', 'AWS::RDS::DBCluster'].includes(cfn.cfnResourceType)) {
    return undefined;
  }
  const value = Stack.of(cfn).resolve((cfn as unknown as { enableIamDatabaseAuthentication?: unknown }).enableIamDatabaseAuthentication);
  return value === true;
}
