/** The DbSetup construct on its own, as another stack would use it, and its helpers. */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import {
  DbSetup,
  type DbSetupProps,
  DEFAULT_MIGRATIONS_DIR,
  defaultServiceTimeout,
  hashMigrations,
  PACKAGE_HASH_FILE,
  packagedCode,
} from '../lib/db-setup';
import { actions, allStatements, FIXTURE_CODE_DIR, fixtureCode, newApp, resources } from './util';

/** A stack with a VPC and a security group standing in for someone else's database. */
function host() {
  const stack = new Stack(newApp({ nag: false }), 'Host');
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
    const granted = kmsStatements.map((s) => ({ actions: actions(s).sort(), resources: resources(s) }));
    assert.deepEqual(
      granted.sort((a, b) => a.actions.length - b.actions.length),
      [
        { actions: ['kms:Decrypt'], resources: [keyArn(adminKey)] },
        { actions: ['kms:Decrypt', 'kms:GenerateDataKey'], resources: [keyArn(userKey)] },
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
