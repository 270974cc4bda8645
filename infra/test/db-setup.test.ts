/** The DbSetup construct on its own, as another stack would use it, and its helpers. */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { Duration, NestedStack, Stack, Validations } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import {
  type AppUser,
  DbSetup,
  type DbSetupProps,
  DEFAULT_MIGRATIONS_DIR,
  defaultServiceTimeout,
  hashMigrations,
  PACKAGE_HASH_FILE,
  packagedCode,
  snapshotPrefix,
} from '../lib/db-setup';
import {
  actions,
  allStatements,
  cfnLint,
  egressRules,
  FIXTURE_CODE_DIR,
  fixtureCode,
  flatten,
  nagViolations,
  newApp,
  resources,
} from './util';

/** A stack with a VPC and a security group standing in for someone else's database. */
function host(opts: { nag?: boolean } = {}) {
  const stack = new Stack(newApp({ nag: opts.nag ?? false }), 'Host');
  const vpc = new ec2.Vpc(stack, 'Vpc', {
    natGateways: 0,
    subnetConfiguration: [{ name: 'db', subnetType: ec2.SubnetType.PRIVATE_ISOLATED }],
  });
  const database = new ec2.SecurityGroup(stack, 'DbSg', { vpc });
  return { stack, vpc, database };
}

function build(extra: Partial<DbSetupProps> & { stack?: Stack } = {}) {
  const h = host();
  const stack = extra.stack ?? h.stack;
  const adminSecret = new secretsmanager.Secret(stack, 'Admin');
  const dbSetup = new DbSetup(stack, 'Setup', {
    code: fixtureCode(),
    vpc: h.vpc,
    database: h.database,
    adminSecret,
    ...extra,
  });
  return { stack, dbSetup, template: Template.fromStack(stack) };
}

describe('DbSetup construct', () => {
  it('sends no Phase and has one resource until phases are used (every migration in one step)', () => {
    const { template } = build();
    template.resourceCountIs('Custom::DbSetup', 1);
    template.resourceCountIs('Custom::DbSetupContract', 0);
    const [resource] = Object.values(template.findResources('Custom::DbSetup')) as any[];
    assert.equal(resource.Properties.Phase, undefined);
  });

  it('runContractAfter adds a contract resource after the given constructs and the expand one', () => {
    const h = host();
    const dbSetup = new DbSetup(h.stack, 'Setup', {
      code: fixtureCode(),
      vpc: h.vpc,
      database: h.database,
      adminSecret: new secretsmanager.Secret(h.stack, 'Admin'),
    });
    const app = new sns.Topic(h.stack, 'App');
    const other = new sns.Topic(h.stack, 'Other');
    dbSetup.runExpandBefore(app, other);
    const contract = dbSetup.runContractAfter(app);
    // A second call reuses the one contract resource.
    assert.equal(dbSetup.runContractAfter(other), contract);
    const template = Template.fromStack(h.stack);
    template.resourceCountIs('Custom::DbSetupContract', 1);
    const res = template.toJSON().Resources as Record<string, any>;
    const logical = (c: { node: { defaultChild?: unknown } }) => h.stack.getLogicalId(c.node.defaultChild as any);
    const expandId = logical(dbSetup.resource);
    const contractId = logical(contract);
    for (const topic of [app, other]) {
      assert.ok(res[logical(topic)].DependsOn.includes(expandId));
      assert.ok(res[contractId].DependsOn.includes(logical(topic)));
    }
    assert.ok(res[contractId].DependsOn.includes(expandId));
    assert.equal(res[expandId].Properties.Phase, 'expand');
    assert.equal(res[contractId].Properties.Phase, 'contract');
    assert.equal(res[contractId].Properties.ManageUsers, 'false');
  });

  it('allows the function into the database on the given port (5432 by default)', () => {
    const { template } = build({ port: 6432 });
    template.hasResourceProperties('AWS::EC2::SecurityGroupIngress', { FromPort: 6432, ToPort: 6432 });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: { DB_SETUP_DB_PORT: '6432', DB_SETUP_USERS: '[]' } },
    });
    build().template.hasResourceProperties('AWS::EC2::SecurityGroupIngress', { FromPort: 5432 });
  });

  it('grants KMS only for customer-managed keys, scoped to the keys', () => {
    const h = host();
    const adminKey = new kms.Key(h.stack, 'AdminKey');
    const userKey = new kms.Key(h.stack, 'UserKey');
    const adminSecret = new secretsmanager.Secret(h.stack, 'Admin', { encryptionKey: adminKey });
    const userSecret = new secretsmanager.Secret(h.stack, 'User', { encryptionKey: userKey });
    new DbSetup(h.stack, 'Setup', {
      code: fixtureCode(),
      vpc: h.vpc,
      database: h.database,
      adminSecret,
      users: [{ username: 'app', role: 'readwrite', secret: userSecret }],
    });
    const res = Template.fromStack(h.stack).toJSON().Resources;
    const kmsStatements = allStatements(res).filter((s) => actions(s).some((a) => a.startsWith('kms:')));
    const keyArn = (k: kms.Key) => `<${h.stack.getLogicalId(k.node.defaultChild as kms.CfnKey)}.Arn>`;
    const granted = kmsStatements.map((s) => ({
      actions: actions(s).sort(),
      resources: resources(s),
      via: flatten(s.Condition?.StringEquals?.['kms:ViaService']),
    }));
    const via = 'secretsmanager.<AWS::Region>.amazonaws.com';
    assert.deepEqual(
      granted.sort((a, b) => a.actions.length - b.actions.length),
      [
        { actions: ['kms:Decrypt'], resources: [keyArn(adminKey)], via },
        { actions: ['kms:Decrypt', 'kms:GenerateDataKey'], resources: [keyArn(userKey)], via },
      ],
    );
  });

  it('scopes an imported secret (name only) to that secret, never to *', () => {
    const h = host();
    const imported = secretsmanager.Secret.fromSecretNameV2(h.stack, 'Imported', 'prod/app_rw');
    new DbSetup(h.stack, 'Setup', {
      code: fixtureCode(),
      vpc: h.vpc,
      database: h.database,
      adminSecret: new secretsmanager.Secret(h.stack, 'Admin'),
      users: [{ username: 'app_rw', role: 'readwrite', secret: imported }],
    });
    const res = Template.fromStack(h.stack).toJSON().Resources;
    const write = allStatements(res).find((s) => actions(s).includes('secretsmanager:PutSecretValue'))!;
    const [arn] = resources(write);
    assert.match(arn, /:secret:prod\/app_rw-\?{6}$/);
  });

  it('sends the optional properties as strings', () => {
    const { template } = build({ transactionMode: 'each', targetMigration: '002_x', manageUsers: false });
    template.hasResourceProperties('Custom::DbSetup', {
      TransactionMode: 'each',
      TargetMigration: '002_x',
      ManageUsers: 'false',
    });
  });

  it('passes extra environment but not over its own variables', () => {
    build({ environment: { DB_SETUP_ROLE_PREFIX: 'svc' } }).template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: { DB_SETUP_ROLE_PREFIX: 'svc', DB_SETUP_TLS: 'verify-full' } },
    });
    assert.throws(() => build({ environment: { DB_SETUP_TLS: 'disable' } }), /may not override DB_SETUP_TLS/);
  });

  it('rejects duplicate usernames and a service timeout over an hour', () => {
    const h = host();
    const s = new secretsmanager.Secret(h.stack, 'S');
    const base = { code: fixtureCode(), vpc: h.vpc, database: h.database, adminSecret: s };
    const dup: DbSetupProps = { ...base, users: [{ username: 'a', role: 'readonly', secret: s }, { username: 'a', role: 'readwrite', secret: s }] };
    assert.throws(() => new DbSetup(h.stack, 'Dup', dup), /unique/);
    assert.throws(() => new DbSetup(h.stack, 'Long', { ...base, timeout: Duration.minutes(15), serviceTimeout: Duration.minutes(61) }), /1 hour/);
  });

  it('derives the service timeout from the Lambda timeout and its two async retries', () => {
    assert.equal(defaultServiceTimeout(Duration.minutes(10)).toMinutes(), 35);
    assert.equal(defaultServiceTimeout(Duration.minutes(5)).toMinutes(), 20);
    build({ timeout: Duration.minutes(5) }).template.hasResourceProperties('Custom::DbSetup', { ServiceTimeout: '1200' });
  });
});


/** The logical id of a construct's CloudFormation resource. */
const logicalId = (stack: Stack, c: { node: { defaultChild?: unknown } }) => stack.getLogicalId(c.node.defaultChild as any);

/** A host stack with a password user (rotated or not) and the DbSetup around it. */
function withUsers(users: (s: Stack) => AppUser[], extra: Partial<DbSetupProps> = {}, opts: { nag?: boolean } = {}) {
  const h = host(opts);
  const adminSecret = new secretsmanager.Secret(h.stack, 'Admin');
  const dbSetup = new DbSetup(h.stack, 'Setup', {
    code: fixtureCode(),
    vpc: h.vpc,
    database: h.database,
    adminSecret,
    users: users(h.stack),
    ...extra,
  });
  return { ...h, adminSecret, dbSetup };
}

/** The CloudFormation resources of a stack, by logical id. */
const resourcesOf = (stack: Stack): Record<string, any> => Template.fromStack(stack).toJSON().Resources;

describe('DbSetup work longer than one invocation', () => {
  const invokeStatements = (res: Record<string, any>) =>
    allStatements(res).filter((st) => actions(st).includes('lambda:InvokeFunction'));

  it('direct mode: lambda:InvokeFunction on the function itself only, in a policy the custom resources wait for', () => {
    const { stack, dbSetup, template } = build();
    const res = template.toJSON().Resources as Record<string, any>;
    const fnId = stack.getLogicalId(dbSetup.function.node.defaultChild as lambda.CfnFunction);
    const policyId = stack.getLogicalId(dbSetup.selfInvokePolicy!.node.defaultChild as iam.CfnPolicy);
    const invoke = invokeStatements(res);
    assert.equal(invoke.length, 1);
    assert.deepEqual(actions(invoke[0]), ['lambda:InvokeFunction']);
    assert.deepEqual(resources(invoke[0]), [`<${fnId}.Arn>`]);
    assert.deepEqual(res[policyId].Properties.PolicyDocument.Statement, [invoke[0]]);
    // Attached to the function's role, and the function does not depend on it (no cycle).
    const role = res[fnId].Properties.Role['Fn::GetAtt'][0];
    assert.deepEqual(res[policyId].Properties.Roles, [{ Ref: role }]);
    assert.ok(!(res[fnId].DependsOn ?? []).includes(policyId));
    const [crId] = Object.keys(res).filter((k) => res[k].Type === 'Custom::DbSetup');
    assert.ok(res[crId].DependsOn.includes(policyId), 'the custom resource must wait for the permission');
    assert.equal(res[fnId].Properties.Environment.Variables.DB_SETUP_CONTINUE, 'true');
  });

  it('can be turned off: no invoke permission, DB_SETUP_CONTINUE false, no isComplete in provider mode', () => {
    for (const responseMode of ['direct', 'provider'] as const) {
      const { dbSetup, template } = build({ continueAcrossInvocations: false, responseMode });
      const res = template.toJSON().Resources as Record<string, any>;
      assert.equal(dbSetup.selfInvokePolicy, undefined);
      const fnId = Stack.of(dbSetup).getLogicalId(dbSetup.function.node.defaultChild as lambda.CfnFunction);
      assert.equal(res[fnId].Properties.Environment.Variables.DB_SETUP_CONTINUE, 'false');
      template.resourceCountIs('AWS::StepFunctions::StateMachine', 0);
      if (responseMode === 'direct') assert.equal(invokeStatements(res).length, 0);
    }
  });

  it('provider mode: the function is the isComplete handler, polled every queryInterval until serviceTimeout', () => {
    const { template } = build({
      responseMode: 'provider',
      serviceTimeout: Duration.minutes(50),
      queryInterval: Duration.seconds(30),
    });
    const [machine] = Object.values(template.findResources('AWS::StepFunctions::StateMachine')) as any[];
    const definition = JSON.stringify(machine.Properties.DefinitionString);
    assert.match(definition, /\\"IntervalSeconds\\":30/);
    assert.match(definition, /\\"MaxAttempts\\":100/);
    template.hasResourceProperties('Custom::DbSetup', { ServiceTimeout: '3000' });
  });
});

describe('DbSetup users: the DB_SETUP_USERS contract', () => {
  it('sends secretId for password users, auth "iam" and no secretId for IAM users, adopt only when true', () => {
    const { stack, dbSetup } = withUsers((s) => [
      { username: 'app_rw', role: 'readwrite', secret: new secretsmanager.Secret(s, 'Rw') },
      { username: 'app_ro', role: 'readonly', auth: 'password', secret: new secretsmanager.Secret(s, 'Ro'), adopt: false },
      { username: 'app_iam', role: 'readonly', auth: 'iam', adopt: true },
      { username: 'legacy', role: 'tablecreator', secret: new secretsmanager.Secret(s, 'Legacy'), adopt: true },
    ]);
    const env = resourcesOf(stack)[logicalId(stack, dbSetup.function)].Properties.Environment.Variables;
    const secret = (id: string) => `<${stack.getLogicalId(stack.node.findChild(id).node.defaultChild as any)}>`;
    assert.deepEqual(JSON.parse(flatten(env.DB_SETUP_USERS)), [
      { username: 'app_rw', role: 'readwrite', secretId: secret('Rw') },
      { username: 'app_ro', role: 'readonly', secretId: secret('Ro') },
      { username: 'app_iam', role: 'readonly', auth: 'iam', adopt: true },
      { username: 'legacy', role: 'tablecreator', secretId: secret('Legacy'), adopt: true },
    ]);
  });

  it('grants no secret access for an IAM user (only the admin secret is read)', () => {
    const { stack, adminSecret } = withUsers(() => [{ username: 'app_iam', role: 'readonly', auth: 'iam' }]);
    const sm = allStatements(resourcesOf(stack)).filter((s) => actions(s).some((a) => a.startsWith('secretsmanager:')));
    assert.deepEqual(
      sm.map((s) => ({ actions: actions(s), resources: resources(s) })),
      [{ actions: ['secretsmanager:GetSecretValue'], resources: [`<${logicalId(stack, adminSecret)}>`] }],
    );
  });

  it('refuses an IAM user with a secret or a rotation, and a password user without a secret', () => {
    const attempt = (user: unknown) => () => withUsers(() => [user as AppUser]);
    const secret = (s: Stack) => new secretsmanager.Secret(s, 'X');
    assert.throws(
      () => withUsers((s) => [{ username: 'app_iam', role: 'readonly', auth: 'iam', secret: secret(s) } as unknown as AppUser]),
      { message: "DbSetup: user app_iam logs in with IAM (auth: 'iam') and has no password: remove its secret" },
    );
    assert.throws(attempt({ username: 'app_iam', role: 'readonly', auth: 'iam', rotation: { type: 'single-user' } }), {
      message: "DbSetup: user app_iam logs in with IAM (auth: 'iam'): there is no password to rotate, remove its rotation",
    });
    assert.throws(attempt({ username: 'app_rw', role: 'readwrite' }), {
      message: "DbSetup: user app_rw logs in with a password and needs a secret (or set auth: 'iam')",
    });
    assert.throws(attempt({ username: 'app_rw', role: 'readwrite', auth: 'kerberos' }), {
      message: "DbSetup: user app_rw: auth must be 'password' or 'iam', not 'kerberos'",
    });
  });
});

describe('DbSetup rotation (Secrets Manager hosted rotation)', () => {
  function rotated(type: 'single-user' | 'alternating-users', more: object = {}, extra: Partial<DbSetupProps> = {}) {
    const h = withUsers(
      (s) => [{ username: 'app_rw', role: 'readwrite', secret: new secretsmanager.Secret(s, 'Rw'), rotation: { type, ...more } }],
      extra,
    );
    const res = resourcesOf(h.stack);
    const [scheduleId, schedule] = Object.entries(res).find(([, r]) => r.Type === 'AWS::SecretsManager::RotationSchedule')!;
    return { ...h, res, scheduleId, schedule };
  }

  it('attaches the single-user hosted rotation in the construct subnets, with its own security group', () => {
    const { stack, vpc, dbSetup, schedule, res } = rotated('single-user');
    assert.equal(Object.values(res).filter((r) => r.Type === 'AWS::SecretsManager::RotationSchedule').length, 1);
    const p = schedule.Properties;
    assert.equal(flatten(p.SecretId), `<${stack.getLogicalId(stack.node.findChild('Rw').node.defaultChild as any)}>`);
    assert.equal(p.HostedRotationLambda.RotationType, 'PostgreSQLSingleUser');
    assert.equal(p.HostedRotationLambda.MasterSecretArn, undefined);
    const isolated = vpc.isolatedSubnets.map((sn) => `<${stack.resolve(sn.subnetId).Ref}>`);
    assert.equal(flatten(p.HostedRotationLambda.VpcSubnetIds), isolated.join(','));
    assert.equal(flatten(p.HostedRotationLambda.VpcSecurityGroupIds), `<${logicalId(stack, dbSetup.rotationSecurityGroup!)}.GroupId>`);
    assert.deepEqual(p.RotationRules, { ScheduleExpression: 'rate(30 days)' });
    assert.equal(p.RotateImmediatelyOnUpdate, undefined, "CloudFormation's default: rotate right away");
    assert.equal(dbSetup.rotationSchedules.app_rw.node.path, 'Host/Setup/Rotation-app_rw');
  });

  it('gives the alternating-users rotation the admin secret as master secret', () => {
    const { stack, adminSecret, schedule } = rotated('alternating-users');
    assert.equal(schedule.Properties.HostedRotationLambda.RotationType, 'PostgreSQLMultiUser');
    assert.equal(flatten(schedule.Properties.HostedRotationLambda.MasterSecretArn), `<${logicalId(stack, adminSecret)}>`);
  });

  it('passes the schedule and rotateImmediatelyOnUpdate, and the subnets the construct was given', () => {
    const h = host();
    const subnets = { subnets: [h.vpc.isolatedSubnets[1]] };
    const stack = h.stack;
    new DbSetup(stack, 'Setup', {
      code: fixtureCode(),
      vpc: h.vpc,
      vpcSubnets: subnets,
      database: h.database,
      adminSecret: new secretsmanager.Secret(stack, 'Admin'),
      users: [
        {
          username: 'app_rw',
          role: 'readwrite',
          secret: new secretsmanager.Secret(stack, 'Rw'),
          rotation: { type: 'single-user', automaticallyAfter: Duration.days(7), rotateImmediatelyOnUpdate: false },
        },
      ],
    });
    Template.fromStack(stack).hasResourceProperties('AWS::SecretsManager::RotationSchedule', {
      RotationRules: { ScheduleExpression: 'rate(7 days)' },
      RotateImmediatelyOnUpdate: false,
      HostedRotationLambda: Match.objectLike({ VpcSubnetIds: stack.resolve(h.vpc.isolatedSubnets[1].subnetId) }),
    });
  });

  it('is created after the custom resource (which writes the secret the rotation starts from), in both modes', () => {
    for (const responseMode of ['direct', 'provider'] as const) {
      const { stack, dbSetup, schedule } = rotated('alternating-users', {}, { responseMode });
      const crId = stack.getLogicalId(dbSetup.resource.node.defaultChild as any);
      assert.ok(schedule.DependsOn.includes(crId), responseMode);
      // ... and after the rotation functions' security group with its egress rules.
      const groupId = logicalId(stack, dbSetup.rotationSecurityGroup!);
      const rules = Object.entries(resourcesOf(stack))
        .filter(([, r]) => r.Type === 'AWS::EC2::SecurityGroupEgress' && flatten(r.Properties.GroupId) === `<${groupId}.GroupId>`)
        .map(([id]) => id);
      assert.ok(rules.length > 0);
      assert.deepEqual([...schedule.DependsOn].sort(), [crId, groupId, ...rules].sort(), responseMode);
    }
  });

  it('admits the rotation functions into the database on its port, and into an endpoint with allowEndpointAccess', () => {
    const { stack, vpc, dbSetup } = withUsers(
      (s) => [{ username: 'app_rw', role: 'readwrite', secret: new secretsmanager.Secret(s, 'Rw'), rotation: { type: 'single-user' } }],
      { port: 6432 },
    );
    const endpoint = vpc.addInterfaceEndpoint('Sm', { service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER, open: false });
    dbSetup.allowEndpointAccess(endpoint);
    const all = resourcesOf(stack);
    const sg = (g: ec2.SecurityGroup) => `<${logicalId(stack, g)}.GroupId>`;
    const rules = Object.values(all)
      .filter((r) => r.Type === 'AWS::EC2::SecurityGroupIngress')
      .map((r) => `${flatten(r.Properties.GroupId)} <- ${flatten(r.Properties.SourceSecurityGroupId)}:${r.Properties.FromPort}-${r.Properties.ToPort}`);
    const db = `<${stack.getLogicalId(stack.node.findChild('DbSg').node.defaultChild as any)}.GroupId>`;
    const ep = `<${logicalId(stack, endpoint.node.findChild('SecurityGroup') as ec2.SecurityGroup)}.GroupId>`;
    assert.deepEqual(rules.sort(), [
      `${db} <- ${sg(dbSetup.securityGroup)}:6432-6432`,
      `${db} <- ${sg(dbSetup.rotationSecurityGroup!)}:6432-6432`,
      `${ep} <- ${sg(dbSetup.securityGroup)}:443-443`,
      `${ep} <- ${sg(dbSetup.rotationSecurityGroup!)}:443-443`,
    ].sort());
  });

  it('creates no rotation security group or schedule when no user is rotated', () => {
    const { stack, dbSetup } = withUsers((s) => [
      { username: 'app_rw', role: 'readwrite', secret: new secretsmanager.Secret(s, 'Rw') },
    ]);
    assert.equal(dbSetup.rotationSecurityGroup, undefined);
    const t = Template.fromStack(stack);
    t.resourceCountIs('AWS::SecretsManager::RotationSchedule', 0);
    t.resourceCountIs('AWS::EC2::SecurityGroupIngress', 1);
  });

  it('needs no cdk-nag SMG4 acknowledgement for a rotated secret; an unrotated one still fails without it', () => {
    const nagged = (rotation?: { type: 'single-user' }) => {
      const h = withUsers(
        (s) => [{ username: 'app_rw', role: 'readwrite', secret: new secretsmanager.Secret(s, 'Rw'), rotation }],
        {},
        { nag: true },
      );
      // The host stack's own findings (its admin secret, its VPC) are acknowledged here.
      Validations.of(h.adminSecret).acknowledge({ id: 'AwsSolutions-SMG4', reason: 'test: the admin secret' });
      Validations.of(h.stack).acknowledge({ id: 'AwsSolutions-VPC7', reason: 'test VPC without flow logs' });
      // A complete host: Secrets Manager through an endpoint (else the construct warns).
      h.dbSetup.allowEndpointAccess(h.vpc.addInterfaceEndpoint('Sm', { service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER, open: false }));
      return nagViolations(h.stack);
    };
    assert.deepEqual(nagged({ type: 'single-user' }), []);
    assert.deepEqual(nagged(), ['AwsSolutions-SMG4 Host/Rw/Resource']);
  });
});

describe('DbSetup.grantConnect (IAM database authentication)', () => {
  function withInstance(iamAuthentication: boolean | undefined) {
    const h = host();
    const engine = rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_16_13 });
    const db = new rds.DatabaseInstance(h.stack, 'Db', {
      engine,
      vpc: h.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      iamAuthentication,
      storageEncrypted: true,
    });
    const dbSetup = new DbSetup(h.stack, 'Setup', {
      code: fixtureCode(),
      vpc: h.vpc,
      database: db,
      adminSecret: db.secret!,
      users: [
        { username: 'app_iam', role: 'readonly', auth: 'iam' },
        { username: 'app_rw', role: 'readwrite', secret: new secretsmanager.Secret(h.stack, 'Rw') },
      ],
    });
    const role = new iam.Role(h.stack, 'App', { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com') });
    return { ...h, db, dbSetup, role };
  }

  /** The rds-db:connect statements of the stack. */
  const connects = (stack: Stack) =>
    allStatements(resourcesOf(stack))
      .filter((s) => actions(s).includes('rds-db:connect'))
      .map((s) => ({ actions: actions(s), resources: resources(s) }));

  it("grants rds-db:connect on the instance's DbiResourceId and the user name, like rds.DatabaseInstance.grantConnect", () => {
    const { stack, db, dbSetup, role } = withInstance(true);
    dbSetup.grantConnect(role, 'app_iam');
    // The same ARN as aws-cdk-lib builds for the instance.
    const other = new iam.Role(stack, 'Other', { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com') });
    db.grantConnect(other, 'app_iam');
    const dbId = logicalId(stack, db);
    const arn = `arn:<AWS::Partition>:rds-db:<AWS::Region>:<AWS::AccountId>:dbuser:<${dbId}.DbiResourceId>/app_iam`;
    assert.deepEqual(connects(stack), [
      { actions: ['rds-db:connect'], resources: [arn] },
      { actions: ['rds-db:connect'], resources: [arn] },
    ]);
  });

  it('uses databaseResourceId when the database is not an RDS construct, and a cluster resource id', () => {
    const h = withUsers(() => [{ username: 'app_iam', role: 'readonly', auth: 'iam' }], { databaseResourceId: 'db-ABCDEFGHIJKL' });
    const role = new iam.Role(h.stack, 'App', { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com') });
    h.dbSetup.grantConnect(role, 'app_iam');
    assert.deepEqual(connects(h.stack)[0].resources, [
      'arn:<AWS::Partition>:rds-db:<AWS::Region>:<AWS::AccountId>:dbuser:db-ABCDEFGHIJKL/app_iam',
    ]);

    const c = host();
    const cluster = rds.DatabaseCluster.fromDatabaseClusterAttributes(c.stack, 'Cluster', {
      clusterIdentifier: 'shared',
      clusterResourceIdentifier: 'cluster-XYZ',
      securityGroups: [c.database],
      port: 5432,
    });
    const setup = new DbSetup(c.stack, 'Setup', {
      code: fixtureCode(),
      vpc: c.vpc,
      database: cluster,
      adminSecret: new secretsmanager.Secret(c.stack, 'Admin'),
      users: [{ username: 'app_iam', role: 'readonly', auth: 'iam' }],
    });
    setup.grantConnect(new iam.Role(c.stack, 'App', { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com') }), 'app_iam');
    assert.deepEqual(connects(c.stack)[0].resources, [
      'arn:<AWS::Partition>:rds-db:<AWS::Region>:<AWS::AccountId>:dbuser:cluster-XYZ/app_iam',
    ]);
  });

  it('refuses an unknown user, a password user, a database with IAM authentication off, or no resource id', () => {
    const { dbSetup, role } = withInstance(true);
    assert.throws(() => dbSetup.grantConnect(role, 'nobody'), {
      message: "DbSetup.grantConnect: nobody is not one of this construct's users",
    });
    assert.throws(() => dbSetup.grantConnect(role, 'app_rw'), {
      message:
        "DbSetup.grantConnect: app_rw logs in with a password, not IAM: set auth: 'iam' on the user to use IAM authentication",
    });
    for (const off of [false, undefined]) {
      const w = withInstance(off);
      assert.throws(() => w.dbSetup.grantConnect(w.role, 'app_iam'), {
        message: 'DbSetup.grantConnect: the database has IAM authentication turned off: set iamAuthentication: true on it',
      });
    }
    const noId = withUsers(() => [{ username: 'app_iam', role: 'readonly', auth: 'iam' }]);
    assert.throws(() => noId.dbSetup.grantConnect(role, 'app_iam'), /needs the database resource id: pass an rds.DatabaseInstance/);
  });
});

describe('snapshotBeforeMigrate', () => {
  /** A DbSetup on an instance or an Aurora cluster of its own, with snapshotBeforeMigrate. */
  function snapshotted(kind: 'instance' | 'cluster', opts: { nag?: boolean; snapshot?: boolean } = {}) {
    const stack = new Stack(newApp({ nag: opts.nag ?? false }), 'Host');
    const vpc = new ec2.Vpc(stack, 'Vpc', {
      natGateways: 0,
      subnetConfiguration: [{ name: 'db', subnetType: ec2.SubnetType.PRIVATE_ISOLATED }],
    });
    const vpcSubnets = { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };
    const database =
      kind === 'instance'
        ? new rds.DatabaseInstance(stack, 'Db', {
            engine: rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_16_13 }),
            vpc,
            vpcSubnets,
            storageEncrypted: true,
          })
        : new rds.DatabaseCluster(stack, 'Db', {
            engine: rds.DatabaseClusterEngine.auroraPostgres({ version: rds.AuroraPostgresEngineVersion.VER_16_9 }),
            writer: rds.ClusterInstance.serverlessV2('Writer'),
            vpc,
            vpcSubnets,
            storageEncrypted: true,
          });
    const dbSetup = new DbSetup(stack, 'Setup', {
      code: fixtureCode(),
      vpc,
      database,
      adminSecret: database.secret!,
      snapshotBeforeMigrate: opts.snapshot ?? true,
    });
    return { stack, database, dbSetup };
  }

  /** The function role's statements that name an rds: action. */
  const rdsStatements = (stack: Stack) =>
    allStatements(resourcesOf(stack))
      .filter((s) => actions(s).some((a) => a.startsWith('rds:')))
      .map((s) => ({ actions: actions(s).sort(), resources: resources(s).sort() }));

  const properties = (stack: Stack) =>
    (Object.values(Template.fromStack(stack).findResources('Custom::DbSetup'))[0] as any).Properties;

  it('names the instance and grants snapshots of exactly it, under this stack\'s snapshot names', () => {
    const { stack } = snapshotted('instance');
    const dbId = stack.getLogicalId(stack.node.findChild('Db').node.defaultChild as any);
    assert.deepEqual(properties(stack).SnapshotDbInstance, { Ref: dbId });
    assert.equal(properties(stack).SnapshotDbCluster, undefined);
    const arn = 'arn:<AWS::Partition>:rds:<AWS::Region>:<AWS::AccountId>';
    assert.deepEqual(rdsStatements(stack), [
      {
        actions: ['rds:CreateDBSnapshot', 'rds:DescribeDBSnapshots'],
        resources: [`${arn}:db:<${dbId}>`, `${arn}:snapshot:db-setup-host-*`],
      },
      { actions: ['rds:AddTagsToResource'], resources: [`${arn}:snapshot:db-setup-host-*`] },
    ]);
  });

  it('names the Aurora cluster and grants cluster snapshots of exactly it', () => {
    const { stack } = snapshotted('cluster');
    const dbId = stack.getLogicalId(stack.node.findChild('Db').node.defaultChild as any);
    assert.deepEqual(properties(stack).SnapshotDbCluster, { Ref: dbId });
    assert.equal(properties(stack).SnapshotDbInstance, undefined);
    const arn = 'arn:<AWS::Partition>:rds:<AWS::Region>:<AWS::AccountId>';
    assert.deepEqual(rdsStatements(stack), [
      {
        actions: ['rds:CreateDBClusterSnapshot', 'rds:DescribeDBClusterSnapshots'],
        resources: [`${arn}:cluster-snapshot:db-setup-host-*`, `${arn}:cluster:<${dbId}>`],
      },
      { actions: ['rds:AddTagsToResource'], resources: [`${arn}:cluster-snapshot:db-setup-host-*`] },
    ]);
  });

  it('grants no RDS permission and sends no snapshot property without the option', () => {
    for (const kind of ['instance', 'cluster'] as const) {
      const { stack } = snapshotted(kind, { snapshot: false });
      assert.deepEqual(rdsStatements(stack), [], kind);
      const props = properties(stack);
      assert.equal(props.SnapshotDbInstance, undefined, kind);
      assert.equal(props.SnapshotDbCluster, undefined, kind);
    }
    const { template } = build();
    assert.ok(!allStatements(template.toJSON().Resources).some((s) => actions(s).some((a) => a.startsWith('rds:'))));
  });

  it('the contract phase snapshots too (its own request, when it has migrations to run)', () => {
    const { stack, dbSetup } = snapshotted('instance');
    dbSetup.runContractAfter(new sns.Topic(stack, 'App'));
    const contract = Object.values(Template.fromStack(stack).findResources('Custom::DbSetupContract'))[0] as any;
    assert.deepEqual(contract.Properties.SnapshotDbInstance, properties(stack).SnapshotDbInstance);
  });

  it('falls back to db-setup-* when the stack name is a token (a nested stack)', () => {
    const parent = new Stack(newApp({ nag: false }), 'Parent');
    const nested = new NestedStack(parent, 'Nested');
    const vpc = new ec2.Vpc(nested, 'Vpc', {
      natGateways: 0,
      subnetConfiguration: [{ name: 'db', subnetType: ec2.SubnetType.PRIVATE_ISOLATED }],
    });
    const db = new rds.DatabaseInstance(nested, 'Db', {
      engine: rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_16_13 }),
      vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      storageEncrypted: true,
    });
    new DbSetup(nested, 'Setup', { code: fixtureCode(), vpc, database: db, adminSecret: db.secret!, snapshotBeforeMigrate: true });
    const snapshots = rdsStatements(nested).flatMap((s) => s.resources).filter((r) => r.includes(':snapshot:'));
    assert.ok(snapshots.length > 0);
    for (const r of snapshots) {
      assert.match(r, /:snapshot:db-setup-\*$/);
    }
  });

  it('refuses a database that is neither an instance nor a cluster', () => {
    assert.throws(() => build({ snapshotBeforeMigrate: true }), /snapshotBeforeMigrate needs `database` to be an rds.DatabaseInstance or rds.DatabaseCluster/);
  });

  it('is cdk-nag clean (the snapshot names\' wildcard acknowledged with its reason) and passes cfn-lint', () => {
    for (const kind of ['instance', 'cluster'] as const) {
      const { stack } = snapshotted(kind, { nag: true });
      // The database itself is the test's, not the construct's: only the construct's findings count.
      const ours = nagViolations(stack).filter((v) => v.includes('/Setup/'));
      assert.deepEqual(ours, [], kind);
      const lint = cfnLint(snapshotted(kind).stack);
      assert.equal(lint.status, 0, `${kind}: ${lint.output}`);
    }
  });

  it('builds the snapshot names\' prefix as the function does', () => {
    // The same cases as src/snapshot.rs's unit tests.
    assert.equal(snapshotPrefix('MyApp-Prod'), 'db-setup-myapp-prod');
    assert.equal(snapshotPrefix('a--b-'), 'db-setup-a-b');
    assert.equal(snapshotPrefix('test'), 'db-setup-test');
    assert.equal(snapshotPrefix(''), 'db-setup');
    assert.equal(snapshotPrefix('x'.repeat(200)), `db-setup-${'x'.repeat(128)}`);
  });
});

describe('hashMigrations', () => {
  const dir = () => mkdtempSync(path.join(tmpdir(), 'migrations-'));

  it('changes when a migration is added, edited or renamed, not for other files', () => {
    const d = dir();
    writeFileSync(path.join(d, '001_a.sql'), 'CREATE TABLE a (id int);');
    const h1 = hashMigrations(d);
    assert.equal(hashMigrations(d), h1, 'deterministic');
    writeFileSync(path.join(d, 'README.md'), 'not a migration');
    assert.equal(hashMigrations(d), h1, 'ignores non-.sql files');
    writeFileSync(path.join(d, '002_b.sql'), 'CREATE TABLE b (id int);');
    const h2 = hashMigrations(d);
    assert.notEqual(h2, h1, 'added');
    writeFileSync(path.join(d, '002_b.sql'), 'CREATE TABLE b (id bigint);');
    const h3 = hashMigrations(d);
    assert.notEqual(h3, h2, 'edited');
    renameSync(path.join(d, '002_b.sql'), path.join(d, '003_b.sql'));
    assert.notEqual(hashMigrations(d), h3, 'renamed');
  });

  it('matches the Rust definition (src/migrate/hash.rs, set_hash), so the function can recognise a rollback', () => {
    const d = dir();
    writeFileSync(path.join(d, '002_b.sql'), 'SELECT 2;\n');
    writeFileSync(path.join(d, '001_a.sql'), 'SELECT 1;\n');
    writeFileSync(path.join(d, 'README.md'), 'ignored');
    assert.equal(hashMigrations(d), '89a5bca71d5f7e63caa0ffd859688deae02069c7d1acb204d35dabdc1583de4f');
  });

  it('does not depend on where a name ends and the content begins', () => {
    const a = dir();
    const b = dir();
    writeFileSync(path.join(a, '1.sql'), 'x.sql');
    writeFileSync(path.join(b, '1.sqlx.sql'), '');
    assert.notEqual(hashMigrations(a), hashMigrations(b));
  });

  it('fails on a missing directory', () => {
    assert.throws(() => hashMigrations('/nonexistent/migrations'), /not found/);
  });
});

describe('packagedCode', () => {
  /** A directory with a `bootstrap` whose first bytes are an ELF header for `machine`. */
  function pkg(machine?: number): string {
    const d = mkdtempSync(path.join(tmpdir(), 'pkg-'));
    mkdirSync(d, { recursive: true });
    const header = Buffer.alloc(64);
    if (machine !== undefined) {
      header.writeUInt32BE(0x7f454c46, 0);
      header.writeUInt16LE(machine, 18);
    }
    writeFileSync(path.join(d, 'bootstrap'), header);
    return d;
  }

  it('asks for `make package` when the binary is missing', () => {
    assert.throws(() => packagedCode('/nonexistent/target/lambda/db-setup', lambda.Architecture.ARM_64), /run `make package` first/);
  });

  it('accepts a binary of the function architecture', () => {
    assert.ok(packagedCode(pkg(0xb7), lambda.Architecture.ARM_64));
    assert.ok(packagedCode(pkg(0x3e), lambda.Architecture.X86_64));
  });

  it('refuses a binary of the other architecture, or not a binary', () => {
    assert.throws(() => packagedCode(pkg(0x3e), lambda.Architecture.ARM_64), /built for x86_64 but the function is arm64/);
    assert.throws(() => packagedCode(pkg(0xb7), lambda.Architecture.X86_64), /built for arm64 but the function is x86_64/);
    assert.throws(() => packagedCode(pkg(), lambda.Architecture.ARM_64), /not an ELF binary/);
  });
});

describe('a package built from other migrations', () => {
  /** A copy of the fixture package whose hash file says `hash` (none when undefined). */
  function fixturePackage(hash?: string): string {
    const d = mkdtempSync(path.join(tmpdir(), 'pkg-'));
    cpSync(path.join(FIXTURE_CODE_DIR, 'bootstrap'), path.join(d, 'bootstrap'));
    if (hash !== undefined) {
      writeFileSync(path.join(d, PACKAGE_HASH_FILE), `${hash}\n`);
    }
    return d;
  }
  const current = () => hashMigrations(DEFAULT_MIGRATIONS_DIR);

  it('fails synthesis with what to do when the hashes differ', () => {
    const stale = 'a'.repeat(64);
    assert.throws(
      () => build({ code: lambda.Code.fromAsset(fixturePackage(stale)) }),
      (e: Error) =>
        e.message.includes(`MigrationsHash ${stale}`) &&
        e.message.includes(current()) &&
        e.message.includes('would take the Update for a rollback') &&
        e.message.includes('Run `make package`'),
    );
  });

  it('passes when they are equal, and the template carries that hash', () => {
    const { template } = build({ code: lambda.Code.fromAsset(fixturePackage(current())) });
    template.hasResourceProperties('Custom::DbSetup', { MigrationsHash: current() });
  });

  it('compares with the migrations directory the construct is given', () => {
    const d = mkdtempSync(path.join(tmpdir(), 'migrations-'));
    writeFileSync(path.join(d, '001_a.sql'), 'SELECT 1;\n');
    const pkg = fixturePackage(hashMigrations(d));
    assert.ok(build({ code: lambda.Code.fromAsset(pkg), migrationsDirectory: d }));
    assert.throws(() => build({ code: lambda.Code.fromAsset(pkg) }), /built with other migrations/);
  });

  it('fails without the hash file, or with a malformed one', () => {
    assert.throws(() => build({ code: lambda.Code.fromAsset(fixturePackage()) }), /migrations\.sha256 not found: .*Run `make package`/);
    assert.throws(() => build({ code: lambda.Code.fromAsset(fixturePackage('not a hash')) }), /does not hold a SHA-256/);
  });

  it('the test fixture holds the hash of migrations/ (update it when a migration changes)', () => {
    const file = path.join(FIXTURE_CODE_DIR, PACKAGE_HASH_FILE);
    assert.equal(
      readFileSync(file, 'utf8').trim(),
      current(),
      `write ${current()} into ${file}`,
    );
  });
});

describe('DbSetup logs, metrics and alarms', () => {
  it('logs in JSON at INFO through Lambda advanced logging controls, and names the metrics namespace', () => {
    const { template } = build();
    template.hasResourceProperties('AWS::Lambda::Function', {
      LoggingConfig: Match.objectLike({ LogFormat: 'JSON', ApplicationLogLevel: 'INFO' }),
      Environment: { Variables: Match.objectLike({ DB_SETUP_METRICS_NAMESPACE: 'DbSetup' }) },
    });
    const custom = build({
      metricsNamespace: 'Team/Db',
      applicationLogLevel: lambda.ApplicationLogLevel.DEBUG,
    }).template;
    custom.hasResourceProperties('AWS::Lambda::Function', {
      LoggingConfig: Match.objectLike({ LogFormat: 'JSON', ApplicationLogLevel: 'DEBUG' }),
      Environment: { Variables: Match.objectLike({ DB_SETUP_METRICS_NAMESPACE: 'Team/Db' }) },
    });
    assert.throws(
      () => build({ environment: { DB_SETUP_METRICS_NAMESPACE: 'x' } }),
      /may not override DB_SETUP_METRICS_NAMESPACE/,
    );
  });

  it('creates no alarm unless asked', () => {
    const { template, dbSetup } = build();
    template.resourceCountIs('AWS::CloudWatch::Alarm', 0);
    assert.equal(dbSetup.failureAlarm, undefined);
  });

  it('alarms on failed deploys by request type and on function errors, and near the timeout, notifying a topic', () => {
    const h = host();
    const topic = new sns.Topic(h.stack, 'Ops');
    const dbSetup = new DbSetup(h.stack, 'Setup', {
      code: fixtureCode(),
      vpc: h.vpc,
      database: h.database,
      adminSecret: new secretsmanager.Secret(h.stack, 'Admin'),
      alarms: { topic },
      timeout: Duration.minutes(10),
    });
    const template = Template.fromStack(h.stack);
    template.resourceCountIs('AWS::CloudWatch::Alarm', 2);
    assert.ok(dbSetup.failureAlarm && dbSetup.durationAlarm);
    const alarms = template.findResources('AWS::CloudWatch::Alarm');
    const failure = Object.values(alarms).find((a: any) => a.Properties.Metrics !== undefined) as any;
    const metrics = failure.Properties.Metrics as any[];
    assert.equal(metrics.find((m) => m.Expression)?.Expression, 'FILL(c, 0) + FILL(u, 0) + FILL(d, 0) + FILL(e, 0)');
    const byId = Object.fromEntries(metrics.filter((m) => m.MetricStat).map((m) => [m.Id, m.MetricStat.Metric]));
    for (const [id, requestType] of [['c', 'Create'], ['u', 'Update'], ['d', 'Delete']]) {
      assert.equal(byId[id].Namespace, 'DbSetup');
      assert.equal(byId[id].MetricName, 'Failures');
      const dims = Object.fromEntries(byId[id].Dimensions.map((d: any) => [d.Name, d.Value]));
      assert.equal(dims.RequestType, requestType);
      assert.equal(dims.Stack, 'Host', 'the stack name, as the function reads it from the StackId');
    }
    assert.equal(byId.e.Namespace, 'AWS/Lambda');
    assert.equal(byId.e.MetricName, 'Errors');
    assert.equal(failure.Properties.Threshold, 1);
    assert.equal(failure.Properties.TreatMissingData, 'notBreaching');
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'Duration',
      Namespace: 'AWS/Lambda',
      Statistic: 'Maximum',
      Threshold: 480000,
      ComparisonOperator: 'GreaterThanThreshold',
    });
    const topicRef = { Ref: Match.stringLikeRegexp('^Ops') };
    template.allResourcesProperties('AWS::CloudWatch::Alarm', {
      AlarmActions: [topicRef],
      OKActions: [topicRef],
    });
  });

  it('alarms without a topic, with a chosen duration fraction, and refuses a fraction out of range', () => {
    const { template } = build({ alarms: { durationFraction: 0.5 }, timeout: Duration.minutes(4) });
    template.resourceCountIs('AWS::CloudWatch::Alarm', 2);
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'Duration', Threshold: 120000 });
    template.allResourcesProperties('AWS::CloudWatch::Alarm', { AlarmActions: Match.absent() });
    assert.ok(build({ alarms: true }));
    assert.throws(() => build({ alarms: { durationFraction: 1.5 } }), /durationFraction/);
  });

  it('stays cdk-nag clean with the alarms and a topic', () => {
    const h = host({ nag: true });
    const adminSecret = new secretsmanager.Secret(h.stack, 'Admin');
    const topic = new sns.Topic(h.stack, 'Ops', { enforceSSL: true, masterKey: new kms.Key(h.stack, 'OpsKey', { enableKeyRotation: true }) });
    new DbSetup(h.stack, 'Setup', {
      code: fixtureCode(),
      vpc: h.vpc,
      database: h.database,
      adminSecret,
      alarms: { topic },
    });
    Validations.of(adminSecret).acknowledge({ id: 'AwsSolutions-SMG4', reason: 'test: the admin secret' });
    Validations.of(h.stack).acknowledge({ id: 'AwsSolutions-VPC7', reason: 'test VPC without flow logs' });
    assert.deepEqual(nagViolations(h.stack), []);
  });
});

describe('DbSetup egress: the function reaches only the database, Secrets Manager and (direct mode) S3', () => {
  /** A rotated user, the Secrets Manager endpoint admitted, and the egress of both groups. */
  function egress(extra: Partial<DbSetupProps> = {}, opts: { endpoint?: boolean } = {}) {
    const h = withUsers(
      (s) => [{ username: 'app_rw', role: 'readwrite', secret: new secretsmanager.Secret(s, 'Rw'), rotation: { type: 'single-user' } }],
      { port: 6432, ...extra },
    );
    const endpoint = h.vpc.addInterfaceEndpoint('Sm', { service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER, open: false });
    if (opts.endpoint ?? true) h.dbSetup.allowEndpointAccess(endpoint);
    const res = resourcesOf(h.stack);
    const sg = (g: ec2.ISecurityGroup) => `<${logicalId(h.stack, g)}.GroupId>`;
    return {
      ...h,
      res,
      db: sg(h.database),
      ep: sg(endpoint.node.findChild('SecurityGroup') as ec2.SecurityGroup),
      fn: egressRules(res, logicalId(h.stack, h.dbSetup.securityGroup)),
      rotation: egressRules(res, logicalId(h.stack, h.dbSetup.rotationSecurityGroup!)),
    };
  }

  it('direct mode with s3PrefixListId: the database port, 443 to the endpoint, 443 to the S3 prefix list; nothing else', () => {
    const e = egress({ s3PrefixListId: 'pl-63a5400a' });
    assert.deepEqual(e.fn, [`${e.db} tcp:6432-6432`, `${e.ep} tcp:443-443`, 'pl-63a5400a tcp:443-443'].sort());
    // The id is given: nothing is looked up.
    assert.equal(Object.values(e.res).filter((r) => r.Type === 'Custom::AWS').length, 0);
    assert.throws(() => egress({ s3PrefixListId: 'com.amazonaws.us-east-1.s3' }), /s3PrefixListId must be a prefix list id \(pl-\.\.\.\)/);
  });

  it('direct mode without s3PrefixListId: the S3 prefix list of the stack\'s region, looked up at deploy time', () => {
    const e = egress();
    const lookups = Object.entries(e.res).filter(([, r]) => r.Type === 'Custom::AWS');
    assert.equal(lookups.length, 1);
    const [lookupId, lookup] = lookups[0];
    assert.deepEqual(e.fn, [`${e.db} tcp:6432-6432`, `${e.ep} tcp:443-443`, `<${lookupId}.PrefixLists.0.PrefixListId> tcp:443-443`].sort());
    const call = flatten(lookup.Properties.Create);
    assert.match(call, /"service":"EC2","action":"DescribeManagedPrefixLists"/i);
    assert.match(call, /"Name":"prefix-list-name","Values":\["com\.amazonaws\.<AWS::Region>\.s3"\]/);
    // Its (shared) function logs to a log group of the construct's retention, not a never-expiring one.
    const fnId = lookup.Properties.ServiceToken['Fn::GetAtt'][0];
    const logGroup = e.res[e.res[fnId].Properties.LoggingConfig.LogGroup.Ref];
    assert.equal(logGroup.Properties.RetentionInDays, 30);
    // The custom resource (its Create, and its Delete's answer) waits for the rules.
    const crId = logicalId(e.stack, e.dbSetup.resource);
    const egressIds = Object.entries(e.res)
      .filter(([, r]) => r.Type === 'AWS::EC2::SecurityGroupEgress')
      .filter(([, r]) => flatten(r.Properties.GroupId) === `<${logicalId(e.stack, e.dbSetup.securityGroup)}.GroupId>`)
      .map(([id]) => id);
    for (const id of egressIds) assert.ok(e.res[crId].DependsOn.includes(id), `${crId} does not wait for ${id}`);
  });

  it('provider mode: the database port and 443 to the endpoint only, no S3, no lookup', () => {
    const e = egress({ responseMode: 'provider' });
    assert.deepEqual(e.fn, [`${e.db} tcp:6432-6432`, `${e.ep} tcp:443-443`].sort());
    assert.equal(Object.values(e.res).filter((r) => r.Type === 'Custom::AWS').length, 0);
    assert.throws(
      () => egress({ responseMode: 'provider', s3PrefixListId: 'pl-63a5400a' }),
      /s3PrefixListId is for direct mode only/,
    );
  });

  it('the rotation functions: the database port and 443 to the endpoint only', () => {
    for (const responseMode of ['direct', 'provider'] as const) {
      const e = egress({ responseMode });
      assert.deepEqual(e.rotation, [`${e.db} tcp:6432-6432`, `${e.ep} tcp:443-443`].sort(), responseMode);
    }
  });

  it('never opens egress to every address, on either group', () => {
    for (const extra of [{}, { s3PrefixListId: 'pl-63a5400a' }, { responseMode: 'provider' as const }]) {
      const e = egress(extra);
      for (const rule of [...e.fn, ...e.rotation]) {
        assert.doesNotMatch(rule, /^(0\.0\.0\.0\/0|::\/0) /, `${JSON.stringify(extra)}: ${rule}`);
      }
    }
  });

  it('a NAT route to Secrets Manager is explicit: secretsManagerEgress, else a warning', () => {
    const nat = egress({ secretsManagerEgress: ec2.Peer.anyIpv4(), s3PrefixListId: 'pl-63a5400a' }, { endpoint: false });
    assert.deepEqual(nat.fn, [`${nat.db} tcp:6432-6432`, '0.0.0.0/0 tcp:443-443', 'pl-63a5400a tcp:443-443'].sort());
    assert.deepEqual(nat.rotation, [`${nat.db} tcp:6432-6432`, '0.0.0.0/0 tcp:443-443'].sort());
    Annotations.fromStack(nat.stack).hasNoWarning('*', Match.stringLikeRegexp('Secrets Manager'));

    const none = egress({ s3PrefixListId: 'pl-63a5400a' }, { endpoint: false });
    assert.deepEqual(none.fn, [`${none.db} tcp:6432-6432`, 'pl-63a5400a tcp:443-443'].sort());
    Annotations.fromStack(none.stack).hasWarning(
      '/Host/Setup',
      Match.stringLikeRegexp('no route to Secrets Manager.*allowEndpointAccess.*secretsManagerEgress'),
    );
    const admitted = egress({ s3PrefixListId: 'pl-63a5400a' });
    Annotations.fromStack(admitted.stack).hasNoWarning('*', Match.stringLikeRegexp('Secrets Manager'));
  });

  it('stays cdk-nag clean in both modes, with and without the lookup', () => {
    for (const extra of [{}, { s3PrefixListId: 'pl-63a5400a' }, { responseMode: 'provider' as const }]) {
      const h = withUsers(
        (s) => [{ username: 'app_rw', role: 'readwrite', secret: new secretsmanager.Secret(s, 'Rw'), rotation: { type: 'single-user' } }],
        extra,
        { nag: true },
      );
      h.dbSetup.allowEndpointAccess(h.vpc.addInterfaceEndpoint('Sm', { service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER, open: false }));
      // The host stack's own findings (its admin secret, its VPC) are acknowledged here.
      Validations.of(h.adminSecret).acknowledge({ id: 'AwsSolutions-SMG4', reason: 'test: the admin secret' });
      Validations.of(h.stack).acknowledge({ id: 'AwsSolutions-VPC7', reason: 'test VPC without flow logs' });
      assert.deepEqual(nagViolations(h.stack), [], JSON.stringify(extra));
    }
  });
});
