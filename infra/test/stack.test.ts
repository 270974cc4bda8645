/** The example stack, as bin/app.ts synthesizes it (fixture code instead of `make package`). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Stack, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { DatabaseStack } from '../lib/database-stack';
import { DEFAULT_MIGRATIONS_DIR, hashMigrations, REPO_ROOT } from '../lib/db-setup';
import { actions, allStatements, egressRules, fixtureCode, flatten, nagViolations, newApp, resources } from './util';

function synth(responseMode: 'direct' | 'provider' = 'direct') {
  const app = newApp();
  const stack = new DatabaseStack(app, 'Test', {
    code: fixtureCode(),
    architecture: lambda.Architecture.ARM_64,
    responseMode,
  });
  // Template.fromStack synthesizes the app: it throws on any unacknowledged cdk-nag finding.
  const template = Template.fromStack(stack);
  const res = template.toJSON().Resources as Record<string, any>;
  const id = (construct: { node: { defaultChild?: unknown } }) =>
    stack.getLogicalId(construct.node.defaultChild as any);
  return { stack, template, res, id, fnId: id(stack.dbSetup.function) };
}

const direct = synth('direct');
const provider = synth('provider');

describe('cdk-nag (AwsSolutions)', () => {
  it('passes in both modes: every finding is fixed or acknowledged', () => {
    // synth() above would have thrown; this only makes the check visible in the report.
    assert.ok(direct.template && provider.template);
  });

  it('fails synthesis on an unacknowledged finding', () => {
    const app = newApp();
    const stack = new DatabaseStack(app, 'Bad', { code: fixtureCode(), architecture: lambda.Architecture.ARM_64 });
    new ec2.SecurityGroup(stack, 'Open', { vpc: stack.vpc }).addIngressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(5432));
    assert.throws(() => Template.fromStack(stack), /Validation failed/);
  });
});

describe('network', () => {
  const { template, res } = direct;

  it('has isolated subnets only: no NAT, no internet gateway, no public IPs', () => {
    template.resourceCountIs('AWS::EC2::NatGateway', 0);
    template.resourceCountIs('AWS::EC2::InternetGateway', 0);
    template.resourceCountIs('AWS::EC2::Subnet', 2);
    template.allResourcesProperties('AWS::EC2::Subnet', { MapPublicIpOnLaunch: false });
    template.resourceCountIs('AWS::EC2::Route', 0);
  });

  it('has Secrets Manager and (direct mode) Lambda interface endpoints and an S3 gateway endpoint', () => {
    const byService = (r: Record<string, any>) =>
      Object.fromEntries(
        Object.values(r)
          .filter((e) => e.Type === 'AWS::EC2::VPCEndpoint')
          .map((e) => [flatten(e.Properties.ServiceName).split('.').pop(), e.Properties]),
      );
    const endpoints = byService(res);
    assert.deepEqual(Object.keys(endpoints).sort(), ['lambda', 's3', 'secretsmanager']);
    for (const service of ['secretsmanager', 'lambda']) {
      assert.equal(endpoints[service].VpcEndpointType, 'Interface');
      assert.equal(endpoints[service].PrivateDnsEnabled, true);
    }
    assert.equal(endpoints.s3.VpcEndpointType, 'Gateway');
    // Provider mode: the function never calls the Lambda API (the framework does).
    assert.deepEqual(Object.keys(byService(provider.res)).sort(), ['s3', 'secretsmanager']);
  });

  it('opens the Secrets Manager endpoint and the database to the function and the rotation functions only, the Lambda endpoint to the function only', () => {
    const { stack, id } = direct;
    const sg = (g: ec2.SecurityGroup) => `<${id(g)}.GroupId>`;
    const endpointSg = Object.keys(res).find((k) => k.startsWith('VpcSecretsManagerSecurityGroup') && res[k].Type === 'AWS::EC2::SecurityGroup')!;
    const lambdaSg = Object.keys(res).find((k) => k.startsWith('VpcLambdaSecurityGroup') && res[k].Type === 'AWS::EC2::SecurityGroup')!;
    const dbSg = `<${stack.resolve(stack.database.connections.securityGroups[0].securityGroupId)['Fn::GetAtt'][0]}.GroupId>`;
    const rules = Object.values(res)
      .filter((r) => r.Type === 'AWS::EC2::SecurityGroupIngress')
      .map((r) => `${flatten(r.Properties.GroupId)} <- ${flatten(r.Properties.SourceSecurityGroupId)}:${r.Properties.FromPort}`);
    const fn = sg(stack.dbSetup.securityGroup);
    const rotation = sg(stack.dbSetup.rotationSecurityGroup!);
    assert.deepEqual(rules.sort(), [
      `${dbSg} <- ${fn}:5432`,
      `${dbSg} <- ${rotation}:5432`,
      `<${endpointSg}.GroupId> <- ${fn}:443`,
      `<${endpointSg}.GroupId> <- ${rotation}:443`,
      `<${lambdaSg}.GroupId> <- ${fn}:443`,
    ].sort());
    template.allResourcesProperties('AWS::EC2::SecurityGroup', {
      SecurityGroupIngress: Match.absent(),
    });
  });

  for (const [mode, synthesized] of [['direct', direct], ['provider', provider]] as const) {
    it(`lets the function out to the database, the endpoint and (direct mode) S3 only, the rotation functions to the first two (${mode} mode)`, () => {
      const { stack, res, id } = synthesized;
      const sg = (g: ec2.ISecurityGroup) => `<${id(g)}.GroupId>`;
      const endpointSg = Object.keys(res).find((k) => k.startsWith('VpcSecretsManagerSecurityGroup') && res[k].Type === 'AWS::EC2::SecurityGroup')!;
      const dbSg = sg(stack.database.connections.securityGroups[0]);
      const lookups = Object.keys(res).filter((k) => res[k].Type === 'Custom::AWS');
      const s3 = mode === 'direct' ? [`<${lookups[0]}.PrefixLists.0.PrefixListId> tcp:443-443`] : [];
      assert.equal(lookups.length, s3.length);
      const both = [`${dbSg} tcp:5432-5432`, `<${endpointSg}.GroupId> tcp:443-443`];
      // Direct mode: the Lambda API's endpoint too (the function invokes itself to go on).
      const lambdaSg = Object.keys(res).find((k) => k.startsWith('VpcLambdaSecurityGroup') && res[k].Type === 'AWS::EC2::SecurityGroup');
      assert.equal(lambdaSg !== undefined, mode === 'direct');
      const lambda = mode === 'direct' ? [`<${lambdaSg}.GroupId> tcp:443-443`] : [];
      assert.deepEqual(egressRules(res, id(stack.dbSetup.securityGroup)), [...both, ...s3, ...lambda].sort());
      assert.deepEqual(egressRules(res, id(stack.dbSetup.rotationSecurityGroup!)), both.sort());
    });
  }
});

describe('database', () => {
  const { template, res } = direct;

  it('is PostgreSQL 16, encrypted, private, with generated admin credentials', () => {
    template.hasResourceProperties('AWS::RDS::DBInstance', {
      Engine: 'postgres',
      EngineVersion: Match.stringLikeRegexp('^16\\.'),
      StorageEncrypted: true,
      PubliclyAccessible: false,
      DeletionProtection: true,
      CACertificateIdentifier: 'rds-ca-rsa2048-g1',
      DBName: 'app',
      EnableIAMDatabaseAuthentication: true,
    });
    template.resourceCountIs('AWS::SecretsManager::SecretTargetAttachment', 1);
  });

  it('forces TLS through its parameter group', () => {
    const [pgId, pg] = Object.entries(res).find(([, r]) => r.Type === 'AWS::RDS::DBParameterGroup')!;
    assert.equal(pg.Properties.Family, 'postgres16');
    assert.equal(pg.Properties.Parameters['rds.force_ssl'], '1');
    template.hasResourceProperties('AWS::RDS::DBInstance', { DBParameterGroupName: { Ref: pgId } });
  });

  it('has one placeholder secret per password user, none for the IAM user', () => {
    template.hasResourceProperties('AWS::SecretsManager::Secret', {
      GenerateSecretString: Match.objectLike({
        SecretStringTemplate: JSON.stringify({ username: 'app_rw' }),
        GenerateStringKey: 'password',
      }),
    });
    assert.deepEqual(Object.keys(direct.stack.userSecrets), ['app_rw']);
    template.resourceCountIs('AWS::SecretsManager::Secret', 2);
  });
});

describe('function', () => {
  const { stack, template, res, id, fnId } = direct;
  const fn = res[fnId].Properties;

  it('is the arm64 provided.al2023 bootstrap, with the documented timeout and memory', () => {
    assert.equal(fn.Runtime, 'provided.al2023');
    assert.equal(fn.Handler, 'bootstrap');
    assert.deepEqual(fn.Architectures, ['arm64']);
    assert.equal(fn.Timeout, 600);
    assert.equal(fn.MemorySize, 256);
  });

  it('runs in the isolated subnets', () => {
    const isolated = stack.vpc.isolatedSubnets.map((s) => stack.resolve(s.subnetId));
    assert.equal(isolated.length, 2);
    assert.deepEqual(fn.VpcConfig.SubnetIds, isolated);
    assert.deepEqual(fn.VpcConfig.SecurityGroupIds, [{ 'Fn::GetAtt': [id(stack.dbSetup.securityGroup), 'GroupId'] }]);
  });

  it('has the environment of docs/configuration.md', () => {
    const env = fn.Environment.Variables;
    const secret = (name: string) => `<${id(stack.userSecrets[name])}>`;
    assert.deepEqual(Object.keys(env).sort(), [
      'DB_SETUP_ADMIN_SECRET_ID',
      'DB_SETUP_CONTINUE',
      'DB_SETUP_DB_HOST',
      'DB_SETUP_DB_NAME',
      'DB_SETUP_DB_PORT',
      'DB_SETUP_METRICS_NAMESPACE',
      'DB_SETUP_RESPONSE_MODE',
      'DB_SETUP_TLS',
      'DB_SETUP_USERS',
    ]);
    assert.equal(flatten(env.DB_SETUP_ADMIN_SECRET_ID), `<${stack.resolve(stack.database.secret!.secretArn).Ref}>`);
    assert.deepEqual(JSON.parse(flatten(env.DB_SETUP_USERS)), [
      { username: 'app_rw', role: 'readwrite', secretId: secret('app_rw') },
      { username: 'app_ro', role: 'readonly', auth: 'iam' },
    ]);
    assert.equal(env.DB_SETUP_RESPONSE_MODE, 'direct');
    assert.equal(env.DB_SETUP_CONTINUE, 'true');
    assert.equal(env.DB_SETUP_TLS, 'verify-full');
    assert.equal(env.DB_SETUP_METRICS_NAMESPACE, 'DbSetup');
    assert.equal(flatten(env.DB_SETUP_DB_HOST), `<${id(stack.database)}.Endpoint.Address>`);
    assert.equal(env.DB_SETUP_DB_PORT, '5432');
    assert.equal(env.DB_SETUP_DB_NAME, 'app');
  });

  it('logs to its own log group with a retention', () => {
    const logGroup = fn.LoggingConfig.LogGroup.Ref;
    assert.equal(res[logGroup].Type, 'AWS::Logs::LogGroup');
    assert.equal(res[logGroup].Properties.RetentionInDays, 30);
    template.allResourcesProperties('AWS::Logs::LogGroup', { RetentionInDays: Match.anyValue() });
  });

  it('bounds asynchronous retries by the service timeout', () => {
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: fnId },
      MaximumRetryAttempts: 2,
      MaximumEventAgeInSeconds: 2100 - 600,
    });
  });
});

describe('custom resource (direct mode)', () => {
  const { stack, template, res, id, fnId } = direct;
  const [crId, cr] = Object.entries(res).find(([, r]) => r.Type === 'Custom::DbSetup')!;

  it('has the function as ServiceToken and the properties of docs/configuration.md', () => {
    template.resourceCountIs('Custom::DbSetup', 1);
    assert.deepEqual(cr.Properties.ServiceToken, { 'Fn::GetAtt': [fnId, 'Arn'] });
    assert.equal(cr.Properties.ServiceTimeout, '2100');
    assert.match(cr.Properties.MigrationsHash, /^[0-9a-f]{64}$/);
    assert.equal(cr.Properties.MigrationsHash, hashMigrations(DEFAULT_MIGRATIONS_DIR));
    // Config mirrors the environment, so that a configuration change sends Update.
    const env = res[fnId].Properties.Environment.Variables;
    const config = JSON.parse(flatten(cr.Properties.Config));
    assert.deepEqual(
      config,
      Object.fromEntries(Object.entries(env).map(([k, v]) => [k, flatten(v)])),
    );
    assert.deepEqual(Object.keys(cr.Properties).sort(), [
      'Config',
      'MigrationsHash',
      'Phase',
      'ServiceTimeout',
      'ServiceToken',
    ]);
    assert.equal(cr.Properties.Phase, 'expand');
  });

  it('is created after the database, its ingress rule and the endpoints (and deleted before them)', () => {
    const deps: string[] = cr.DependsOn;
    const ofType = (t: string) => Object.keys(res).filter((k) => res[k].Type === t);
    for (const needed of [
      id(stack.database),
      ...ofType('AWS::EC2::VPCEndpoint'),
      ...ofType('AWS::EC2::SecurityGroupIngress'),
    ]) {
      assert.ok(deps.includes(needed), `${crId} should depend on ${needed}`);
    }
  });
});

describe('two-phase deploy (expand, application, contract)', () => {
  for (const [mode, synthesized] of [['direct', direct], ['provider', provider]] as const) {
    it(`orders expand before the application and contract after it (${mode} mode)`, () => {
      const { stack, res, id } = synthesized;
      const [expandId, expand] = Object.entries(res).find(([, r]) => r.Type === 'Custom::DbSetup')!;
      const contracts = Object.entries(res).filter(([, r]) => r.Type === 'Custom::DbSetupContract');
      assert.equal(contracts.length, 1);
      const [contractId, contract] = contracts[0];
      const appId = id(stack.application);
      assert.equal(expand.Properties.Phase, 'expand');
      assert.equal(contract.Properties.Phase, 'contract');
      // Same function, same migrations; the users step runs in the expand phase only.
      assert.deepEqual(contract.Properties.ServiceToken, expand.Properties.ServiceToken);
      assert.equal(contract.Properties.MigrationsHash, expand.Properties.MigrationsHash);
      assert.equal(contract.Properties.ManageUsers, 'false');
      assert.equal(expand.Properties.ManageUsers, undefined);
      // expand <- application <- contract (and contract <- expand directly).
      assert.ok(res[appId].DependsOn.includes(expandId), `${appId} should depend on ${expandId}`);
      assert.ok(contract.DependsOn.includes(appId), `${contractId} should depend on ${appId}`);
      assert.ok(contract.DependsOn.includes(expandId), `${contractId} should depend on ${expandId}`);
      assert.ok(!(expand.DependsOn ?? []).includes(contractId));
      assert.ok(!(expand.DependsOn ?? []).includes(appId));
    });
  }
});

describe('permissions', () => {
  const { stack, res, id, fnId } = direct;
  const statements = allStatements(res);
  const admin = `<${stack.resolve(stack.database.secret!.secretArn).Ref}>`;
  const users = [`<${id(stack.userSecrets.app_rw)}>`];

  it('reads the admin and user secrets, writes the user secrets only', () => {
    const sm = statements.filter((s) => actions(s).some((a) => a.startsWith('secretsmanager:')));
    const read = sm.filter((s) => actions(s).includes('secretsmanager:GetSecretValue'));
    assert.equal(read.length, 1);
    assert.deepEqual(actions(read[0]), ['secretsmanager:GetSecretValue']);
    assert.deepEqual(resources(read[0]).sort(), [admin, ...users].sort());
    const write = sm.filter((s) => s !== read[0]);
    assert.equal(write.length, 1);
    assert.deepEqual(actions(write[0]).sort(), [
      'secretsmanager:DescribeSecret',
      'secretsmanager:PutSecretValue',
      'secretsmanager:UpdateSecretVersionStage',
    ]);
    assert.deepEqual(resources(write[0]).sort(), users);
  });

  it('has no wildcard resource for any secretsmanager action, no KMS, no S3', () => {
    for (const s of statements) {
      if (actions(s).some((a) => a.startsWith('secretsmanager:'))) {
        for (const r of resources(s)) assert.ok(!r.includes('*'), `wildcard resource ${r}`);
      }
      assert.ok(!actions(s).some((a) => a.includes('*')), `wildcard action in ${JSON.stringify(s)}`);
      assert.ok(!actions(s).some((a) => /^(kms|s3):/.test(a)), `unexpected ${actions(s)}`);
    }
  });

  it('gets VPC access from the managed AWSLambdaVPCAccessExecutionRole', () => {
    const role = res[res[fnId].Properties.Role['Fn::GetAtt'][0]];
    const managed = role.Properties.ManagedPolicyArns.map(flatten);
    assert.deepEqual(managed.map((a: string) => a.split('/').pop()).sort(), [
      'AWSLambdaBasicExecutionRole',
      'AWSLambdaVPCAccessExecutionRole',
    ]);
  });
});

describe('rotation and IAM users', () => {
  const admin = (m: typeof direct) => `<${m.stack.resolve(m.stack.database.secret!.secretArn).Ref}>`;

  it('rotates app_rw with the alternating-users hosted rotation, after the custom resource, in both modes', () => {
    for (const m of [direct, provider]) {
      const schedules = Object.values(m.res).filter((r) => r.Type === 'AWS::SecretsManager::RotationSchedule');
      assert.equal(schedules.length, 1);
      const [schedule] = schedules;
      const crId = Object.keys(m.res).find((k) => m.res[k].Type === 'Custom::DbSetup');
      // ... and after the rotation functions' egress rules: to the database, and to the endpoint.
      const groupId = m.id(m.stack.dbSetup.rotationSecurityGroup!);
      const egress = Object.keys(m.res).filter(
        (k) => m.res[k].Type === 'AWS::EC2::SecurityGroupEgress' && flatten(m.res[k].Properties.GroupId) === `<${groupId}.GroupId>`,
      );
      assert.equal(egress.length, 2);
      assert.deepEqual([...schedule.DependsOn].sort(), [crId, groupId, ...egress].sort());
      assert.equal(flatten(schedule.Properties.SecretId), `<${m.id(m.stack.userSecrets.app_rw)}>`);
      const hosted = schedule.Properties.HostedRotationLambda;
      assert.equal(hosted.RotationType, 'PostgreSQLMultiUser');
      assert.equal(flatten(hosted.MasterSecretArn), admin(m));
      assert.equal(flatten(hosted.VpcSecurityGroupIds), `<${m.id(m.stack.dbSetup.rotationSecurityGroup!)}.GroupId>`);
      const isolated = m.stack.vpc.isolatedSubnets.map((s) => `<${m.stack.resolve(s.subnetId).Ref}>`);
      assert.equal(flatten(hosted.VpcSubnetIds), isolated.join(','));
      assert.deepEqual(schedule.Properties.RotationRules, { ScheduleExpression: 'rate(30 days)' });
    }
  });

  it('lets the stand-in application role connect as app_ro, and only as app_ro', () => {
    const { stack, res, id } = direct;
    const connects = allStatements(res).filter((s) => actions(s).some((a) => a.startsWith('rds-db:')));
    assert.deepEqual(
      connects.map((s) => ({ actions: actions(s), resources: resources(s) })),
      [
        {
          actions: ['rds-db:connect'],
          resources: [`arn:<AWS::Partition>:rds-db:<AWS::Region>:<AWS::AccountId>:dbuser:<${id(stack.database)}.DbiResourceId>/app_ro`],
        },
      ],
    );
    const policy = Object.values(res).find(
      (r) => r.Type === 'AWS::IAM::Policy' && r.Properties.PolicyDocument.Statement.some((s: any) => s.Action === 'rds-db:connect'),
    );
    assert.deepEqual(policy.Properties.Roles, [{ Ref: id(stack.appRole) }]);
  });

  it('acknowledges cdk-nag SMG4 only on secrets without rotation', () => {
    const acks = (c: { node: { metadata: { type: string; data: unknown }[] } }) =>
      c.node.metadata
        .filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
        .flatMap((m) => Object.keys(m.data as Record<string, string>))
        .map((key) => key.replace(/^Annotation::/, ''));
    const { stack } = direct;
    assert.deepEqual(acks(stack.database.node.findChild('Secret')), ['AwsSolutions-SMG4']);
    assert.deepEqual(acks(stack.userSecrets.app_rw), []);
    assert.ok(!acks(stack).includes('AwsSolutions-SMG4'), 'no stack-wide SMG4 acknowledgement');
    // A password user configured without rotation: acknowledged with its reason, nag-clean.
    const plain = new DatabaseStack(newApp(), 'Plain', {
      code: fixtureCode(),
      architecture: lambda.Architecture.ARM_64,
      users: [{ username: 'app_rw', role: 'readwrite' }],
    });
    assert.deepEqual(acks(plain.userSecrets.app_rw), ['AwsSolutions-SMG4']);
    assert.deepEqual(nagViolations(plain), []);
    assert.equal(plain.dbSetup.rotationSecurityGroup, undefined);
  });

  it('has the resource counts docs/deploy.md and the README quote', () => {
    // `cdk synth` adds AWS::CDK::Metadata (version reporting), which the test app leaves out.
    const count = (m: typeof direct) => Object.keys(m.res).length + 1;
    const deployMd = readFileSync(path.join(REPO_ROOT, 'docs', 'deploy.md'), 'utf8');
    const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    assert.match(deployMd, new RegExp(`\\(${count(direct)} resources in direct mode, ${count(provider)} in provider mode`));
    assert.match(readme, new RegExp(`example stack creates \\(${count(direct)} resources`));
  });
});

describe('provider mode', () => {
  const { stack, template, res, id, fnId } = provider;
  const frameworkFn = stack.dbSetup.provider!.node.findChild('framework-onEvent');
  const frameworkId = id(frameworkFn);

  it('routes the custom resource through the Provider framework', () => {
    template.resourceCountIs('Custom::DbSetup', 1);
    template.hasResourceProperties('Custom::DbSetup', {
      ServiceToken: { 'Fn::GetAtt': [frameworkId, 'Arn'] },
      ServiceTimeout: '2100',
      MigrationsHash: hashMigrations(DEFAULT_MIGRATIONS_DIR),
    });
    assert.equal(res[fnId].Properties.Environment.Variables.DB_SETUP_RESPONSE_MODE, 'provider');
  });

  it('lets the framework invoke the function, from outside the VPC, for onEvent and isComplete', () => {
    const framework = res[frameworkId].Properties;
    assert.equal(framework.VpcConfig, undefined);
    assert.equal(flatten(framework.Environment.Variables.USER_ON_EVENT_FUNCTION_ARN), `<${fnId}.Arn>`);
    assert.equal(flatten(framework.Environment.Variables.USER_IS_COMPLETE_FUNCTION_ARN), `<${fnId}.Arn>`);
    // Every invoke grant is the framework's own: on the function, or on the framework's
    // isComplete and onTimeout functions (its waiter); the function itself invokes nothing.
    const invoke = allStatements(res).filter((s) => actions(s).includes('lambda:InvokeFunction'));
    const targets = [...new Set(invoke.flatMap(resources))].sort();
    const fw = (name: string) => {
      const [logical] = Object.keys(res).filter((k) => k.startsWith(`DbSetupProviderframework${name}`) && res[k].Type === 'AWS::Lambda::Function');
      return logical;
    };
    assert.deepEqual(targets, [
      `<${fnId}.Arn>`,
      `<${fnId}.Arn>:*`,
      `<${fw('isComplete')}.Arn>`,
      `<${fw('isComplete')}.Arn>:*`,
      `<${fw('onTimeout')}.Arn>`,
      `<${fw('onTimeout')}.Arn>:*`,
    ].sort());
    const fnRole = flatten(res[fnId].Properties.Role);
    for (const [, r] of Object.entries(res).filter(([, r]) => r.Type === 'AWS::IAM::Policy')) {
      const attached = (r.Properties.Roles ?? []).map(flatten);
      if (attached.some((a: string) => fnRole.includes(a.replace(/[<>]/g, '')))) {
        const statements = r.Properties.PolicyDocument.Statement;
        assert.ok(!statements.some((s: any) => actions(s).includes('lambda:InvokeFunction')), 'the function invokes itself in provider mode');
      }
    }
  });

  it('polls isComplete for as long as the ServiceTimeout, the one setting (35 min by default)', () => {
    const [machine] = Object.values(res).filter((r) => r.Type === 'AWS::StepFunctions::StateMachine');
    const definition = JSON.stringify(machine.Properties.DefinitionString);
    // The waiter retries every queryInterval (10 s) for totalTimeout = ServiceTimeout (2100 s).
    assert.match(definition, /\\"IntervalSeconds\\":10/);
    assert.match(definition, /\\"MaxAttempts\\":210/);
    assert.equal(machine.Properties.LoggingConfiguration.Level, 'ALL');
    assert.equal(machine.Properties.LoggingConfiguration.IncludeExecutionData, false);
    const [cr] = Object.values(res).filter((r) => r.Type === 'Custom::DbSetup');
    assert.equal(cr.Properties.ServiceTimeout, '2100');
  });

  it('uses another logical id than direct mode (a ServiceToken cannot change in place)', () => {
    const directCr = Object.keys(direct.res).find((k) => direct.res[k].Type === 'Custom::DbSetup');
    const providerCr = Object.keys(res).find((k) => res[k].Type === 'Custom::DbSetup');
    assert.notEqual(directCr, providerCr);
  });
});

describe('arch switch', () => {
  it('builds an x86_64 function when asked', () => {
    const app = newApp({ nag: false });
    const stack = new DatabaseStack(app, 'X86', { code: fixtureCode(), architecture: lambda.Architecture.X86_64 });
    Template.fromStack(stack).hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'provided.al2023',
      Architectures: ['x86_64'],
    });
    assert.ok(Stack.isStack(stack));
  });
});
