// The SROS2 policy reader: it judges every fixture as `xmllint --nonet --xinclude --schema policy.xsd`
// does (the independent peer, offline through sros2's xml_cache catalog), and refuses on purpose,
// each with a specific message, what is dangerous or unsupported (DTDs, PIs, other encodings, other
// XInclude forms, includes outside the policy's directory, oversized input, bad ROS 2 names).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { Sros2PolicyError } from "../src/ros2/errors.js";
import { DEFAULT_LIMITS, parseSros2Policy, readSros2PolicyFile } from "../src/ros2/policy-xml/index.js";
import { InvalidArgument } from "../src/authority/errors.js";
import { cli, tempDir, vectorPath } from "./helpers.js";

const SROS2 = vectorPath("sros2", "sros2");
const POLICIES = join(SROS2, "test", "policies");
const POLICY_XSD = join(SROS2, "sros2", "policy", "schemas", "policy.xsd");
const CATALOG = join(SROS2, "xml_cache", "xhtml-cache.xml");

function xmllintAccepts(file: string): { ok: boolean; stderr: string } {
  const r = spawnSync("xmllint", ["--nonet", "--noout", "--xinclude", "--schema", POLICY_XSD, file], {
    encoding: "utf8",
    env: { ...process.env, XML_CATALOG_FILES: CATALOG },
    timeout: 60_000,
    cwd: dirname(file),
  });
  if (r.error) throw r.error;
  return { ok: r.status === 0, stderr: r.stderr };
}

function readerAccepts(file: string): { ok: boolean; message: string } {
  try {
    readSros2PolicyFile(file);
    return { ok: true, message: "" };
  } catch (e) {
    assert.ok(e instanceof Sros2PolicyError, `a Sros2PolicyError, not ${(e as Error).stack}`);
    assert.ok(e instanceof InvalidArgument);
    return { ok: false, message: e.message };
  }
}

const wrap = (profiles: string) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<policy version="0.2.0" xmlns:xi="http://www.w3.org/2001/XInclude">\n  <enclaves>\n` +
  `    <enclave path="/ns/node">\n${profiles}\n    </enclave>\n  </enclaves>\n</policy>\n`;
const profile = (rules: string, attrs = 'ns="/" node="n"') =>
  wrap(`      <profiles>\n        <profile ${attrs}>\n${rules}\n        </profile>\n      </profiles>`);
const TALK = '<topics publish="ALLOW"><topic>chatter</topic></topics>';

interface Fixture {
  name: string;
  /** The policy file (policy.xml) and any others, relative to a copy of sros2's test/policies. */
  files: Record<string, string | Buffer>;
  main?: string;
  /** For refusals: what the reader's message must say. */
  message?: RegExp;
}

const SAME: Fixture[] = [
  // accepted by both
  ...["sample", "single_context", "minimal_action", "talker_listener", "add_two_ints"].map((n) => ({
    name: n,
    files: {},
    main: `${n}.policy.xml`,
  })),
  { name: "profile without rules", files: { "policy.xml": profile("") } },
  {
    name: "metadata with anything in it",
    files: {
      "policy.xml": wrap(
        `<profiles type="x"><profile ns="/" node="n">${TALK}</profile>` +
          '<metadata foo="1"><anything x="y">text<b/><enclave/></anything>free text</metadata></profiles>',
      ),
    },
  },
  {
    name: "comments, CDATA, single quotes, BOM",
    files: {
      "policy.xml": Buffer.concat([
        Buffer.from([0xef, 0xbb, 0xbf]),
        Buffer.from(profile("<!-- c --><topics publish='DENY' subscribe='ALLOW'><!-- c --><topic><![CDATA[chatter]]></topic></topics>")),
      ]),
    },
  },
  {
    name: "topics without qualifiers, services and actions",
    files: {
      "policy.xml": profile(
        '<topics><topic>a</topic></topics><services request="ALLOW"><service>s</service></services>' +
          '<actions execute="DENY"><action>x</action></actions>',
      ),
    },
  },
  {
    name: "2003 XInclude of a whole file (no xpointer)",
    files: {
      "one.xml": '<enclave path="/one"><profiles><profile ns="/" node="n"/></profiles></enclave>',
      "policy.xml":
        '<policy version="0.2.0" xmlns:xi="http://www.w3.org/2003/XInclude"><enclaves><xi:include href="one.xml"/>' +
        "</enclaves></policy>",
    },
  },
  {
    name: "xpointer without a final *",
    files: {
      "policy.xml":
        '<policy version="0.2.0" xmlns:xi="http://www.w3.org/2001/XInclude"><enclaves>' +
        '<xi:include href="talker_listener.policy.xml" xpointer="xpointer(/policy/enclaves/enclave)" parse="xml"/></enclaves></policy>',
    },
  },
  {
    name: "rules included from a subdirectory (xml:base on <topics>, allowed)",
    files: {
      "sub/a.xml":
        '<profile xmlns:xi="http://www.w3.org/2001/XInclude"><topics publish="ALLOW">' +
        '<xi:include href="b.xml" xpointer="xpointer(/topics/*)"/>' +
        "</topics></profile>",
      "sub/b.xml": "<topics><topic>x</topic></topics>",
      "policy.xml": profile('<xi:include href="sub/a.xml" xpointer="xpointer(/profile/*)"/>'),
    },
  },
  {
    name: "explicit xml:base on profile and topics",
    files: {
      "policy.xml": profile(`<topics xml:base="x/y.xml" publish="ALLOW"><topic>a</topic></topics>`, 'ns="/" node="n" xml:base="a/b.xml"'),
    },
  },
  {
    name: "xsi:noNamespaceSchemaLocation hint",
    files: {
      "policy.xml":
        '<policy version="0.2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ' +
        'xsi:noNamespaceSchemaLocation="policy.xsd"><enclaves><enclave path="/a"><profiles><profile ns="/" node="n"/></profiles>' +
        "</enclave></enclaves></policy>",
    },
  },
  {
    name: "same-directory includes through ./ and sub/../ (no xml:base)",
    files: {
      "sub/x.txt": "",
      "t2.xml": "<topics><topic>x</topic><topic>y</topic></topics>",
      "policy.xml": profile(
        '<topics publish="ALLOW"><xi:include href="./t2.xml" xpointer="xpointer(/topics/*)"/>' +
          '<xi:include href="sub/../t2.xml" xpointer="xpointer(/topics/topic)"/></topics>',
      ),
    },
  },
  {
    name: "the same file included twice (not a cycle)",
    files: {
      "policy.xml": profile(
        '<xi:include href="common/node.xml" xpointer="xpointer(/profile/*)"/>' +
          '<xi:include href="common/node.xml" xpointer="xpointer(/profile/*)"/>',
      ),
    },
  },
  // refused by both
  {
    name: "no version",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/></profiles>").replace(' version="0.2.0"', "") },
    message: /<policy> needs the attribute version/,
  },
  {
    name: "version 0.1.0",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/></profiles>").replace("0.2.0", "0.1.0") },
    message: /version="0.1.0".*"0.2.0"/,
  },
  {
    name: "version with a space",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/></profiles>").replace('"0.2.0"', '" 0.2.0"') },
    message: /version=" 0.2.0"/,
  },
  {
    name: "unknown attribute on policy",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/></profiles>").replace("<policy ", '<policy x="1" ') },
    message: /attribute x is not allowed on <policy>/,
  },
  {
    name: "unknown attribute on enclave",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/></profiles>").replace("<enclave ", '<enclave id="1" ') },
    message: /attribute id is not allowed on <enclave>/,
  },
  {
    name: "attribute on topic",
    files: { "policy.xml": profile('<topics publish="ALLOW"><topic k="v">a</topic></topics>') },
    message: /attribute k is not allowed on <topic>/,
  },
  {
    name: "enclave without path",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/></profiles>").replace(' path="/ns/node"', "") },
    message: /<enclave> needs the attribute path/,
  },
  { name: "profile without ns", files: { "policy.xml": profile(TALK, 'node="n"') }, message: /<profile> needs the attribute ns/ },
  { name: "profile without node", files: { "policy.xml": profile(TALK, 'ns="/"') }, message: /<profile> needs the attribute node/ },
  { name: "no enclaves", files: { "policy.xml": '<policy version="0.2.0"/>' }, message: /<policy> is missing its <enclaves>/ },
  { name: "empty enclaves", files: { "policy.xml": '<policy version="0.2.0"><enclaves/></policy>' }, message: /at least one <enclave>/ },
  {
    name: "two enclaves elements",
    files: {
      "policy.xml":
        '<policy version="0.2.0"><enclaves><enclave path="/a"><profiles><profile ns="/" node="n"/>' +
        "</profiles></enclave></enclaves><enclaves/></policy>",
    },
    message: /<enclaves> is not expected after <enclaves>/,
  },
  { name: "enclave without profiles", files: { "policy.xml": wrap("") }, message: /<enclave> needs at least one <profiles>/ },
  { name: "profiles without profile", files: { "policy.xml": wrap("<profiles/>") }, message: /<profiles> needs at least one <profile>/ },
  {
    name: "metadata first",
    files: { "policy.xml": wrap("<profiles><metadata/><profile ns='/' node='n'/></profiles>") },
    message: /<metadata> is not expected; <profiles> starts with a <profile>/,
  },
  {
    name: "two metadata",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/><metadata/><metadata/></profiles>") },
    message: /<metadata> is not expected here/,
  },
  {
    name: "profile after metadata",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/><metadata/><profile ns='/' node='m'/></profiles>") },
    message: /<profile> is not expected here/,
  },
  {
    name: "unknown rule element",
    files: { "policy.xml": profile("<params><param>x</param></params>") },
    message: /<params> is not expected in <profile>/,
  },
  {
    name: "topics without topic",
    files: { "policy.xml": profile('<topics publish="ALLOW"></topics>') },
    message: /<topics> needs at least one <topic>/,
  },
  {
    name: "service inside topics",
    files: { "policy.xml": profile('<topics publish="ALLOW"><service>a</service></topics>') },
    message: /<service> is not expected here; expected <topic>/,
  },
  {
    name: "qualifier in lower case",
    files: { "policy.xml": profile('<topics publish="allow"><topic>a</topic></topics>') },
    message: /publish="allow".*ALLOW or DENY/,
  },
  {
    name: "qualifier with a trailing space",
    files: { "policy.xml": profile('<topics publish="ALLOW "><topic>a</topic></topics>') },
    message: /ALLOW or DENY/,
  },
  {
    name: "wrong qualifier for the kind",
    files: { "policy.xml": profile('<services publish="ALLOW"><service>a</service></services>') },
    message: /attribute publish is not allowed on <services>/,
  },
  {
    name: "text between elements",
    files: { "policy.xml": wrap("oops<profiles><profile ns='/' node='n'/></profiles>") },
    message: /text "oops" is not allowed inside <enclave>/,
  },
  {
    name: "element inside topic",
    files: { "policy.xml": profile('<topics publish="ALLOW"><topic>a<b/></topic></topics>') },
    message: /<b> is not allowed inside <topic>/,
  },
  { name: "root is not policy", files: { "policy.xml": "<enclaves/>" }, message: /the root element is <enclaves>/ },
  {
    name: "policy in a namespace",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/></profiles>").replace("<policy ", '<policy xmlns="urn:x" ') },
    message: /namespace urn:x/,
  },
  {
    name: "profile with a prefix",
    files: { "policy.xml": wrap("<profiles><p:profile xmlns:p='urn:p' ns='/' node='n'/></profiles>") },
    message: /<p:profile> \(namespace urn:p\)/,
  },
  {
    name: "explicit xml:base on enclave",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/></profiles>").replace("<enclave ", '<enclave xml:base="a/b" ') },
    message: /xml:base is not allowed on <enclave>/,
  },
  {
    name: "enclaves included from a subdirectory (libxml2 adds xml:base)",
    files: {
      "sub/e.xml":
        '<policy version="0.2.0"><enclaves><enclave path="/e"><profiles><profile ns="/" node="n"/></profiles></enclave>' +
        "</enclaves></policy>",
      "policy.xml":
        '<policy version="0.2.0" xmlns:xi="http://www.w3.org/2001/XInclude"><enclaves><xi:include href="sub/e.xml" ' +
        'xpointer="xpointer(/policy/enclaves/*)"/></enclaves></policy>',
    },
    message: /sub\/e\.xml:1: attribute xml:base is not allowed on <enclave>/,
  },
  {
    name: "topic included from a subdirectory",
    files: {
      "sub/t.xml": "<topics><topic>x</topic></topics>",
      "policy.xml": profile('<topics publish="ALLOW"><xi:include href="sub/t.xml" xpointer="xpointer(/topics/*)"/></topics>'),
    },
    message: /xml:base is not allowed on <topic>/,
  },
  {
    name: "xml:lang on profile",
    files: { "policy.xml": profile(TALK, 'ns="/" node="n" xml:lang="en"') },
    message: /xml:lang is not allowed on <profile>/,
  },
  {
    name: "metadata with a bad xml:lang",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/><metadata xml:lang='!!'/></profiles>") },
    message: /xml:lang="!!" on <metadata> is not a language tag/,
  },
  {
    name: "metadata with a bad xml:space",
    files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/><metadata><x xml:space='foo'/></metadata></profiles>") },
    message: /xml:space="foo"/,
  },
  {
    name: "metadata holding a <policy> (validated laxly, as libxml2 does)",
    files: {
      "policy.xml": wrap("<profiles><profile ns='/' node='n'/><metadata><policy/></metadata></profiles>"),
    },
    message: /<policy> needs the attribute version/,
  },
  {
    name: "include of a missing file",
    files: { "policy.xml": profile('<xi:include href="common/nope.xml" xpointer="xpointer(/profile/*)"/>') },
    message: /policy\.xml:\d+: xi:include of "common\/nope\.xml": no such file/,
  },
  {
    name: "xpointer that selects nothing",
    files: { "policy.xml": profile('<xi:include href="common/node.xml" xpointer="xpointer(/policy/*)"/>') },
    message: /selects nothing in .*common\/node\.xml/,
  },
  {
    name: "include of itself",
    files: { "policy.xml": profile('<xi:include href="policy.xml" xpointer="xpointer(/policy/enclaves/enclave/profiles/profile/*)"/>') },
    message: /xi:include cycle: policy\.xml -> policy\.xml/,
  },
  {
    name: "include cycle a -> b -> a",
    files: {
      "a.xml": '<profile xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="b.xml" xpointer="xpointer(/profile/*)"/></profile>',
      "b.xml": '<profile xmlns:xi="http://www.w3.org/2003/XInclude"><xi:include href="a.xml" xpointer="xpointer(/profile/*)"/></profile>',
      "policy.xml": profile('<xi:include href="a.xml" xpointer="xpointer(/profile/*)"/>'),
    },
    message: /xi:include cycle: policy\.xml -> a\.xml -> b\.xml -> a\.xml/,
  },
  { name: "unclosed tag", files: { "policy.xml": "<policy version='0.2.0'><enclaves>" }, message: /not well-formed XML/ },
  { name: "duplicate attribute", files: { "policy.xml": profile(TALK, 'ns="/" ns="/" node="n"') }, message: /not well-formed XML/ },
  {
    name: "undefined entity",
    files: { "policy.xml": profile('<topics publish="ALLOW"><topic>&foo;</topic></topics>') },
    message: /not well-formed XML/,
  },
  {
    name: "character reference to a control character",
    files: { "policy.xml": profile('<topics publish="ALLOW"><topic>a&#1;</topic></topics>') },
    message: /U\+0001 is not allowed in XML/,
  },
  {
    name: "raw control character",
    files: { "policy.xml": profile('<topics publish="ALLOW"><topic>a\u0002</topic></topics>') },
    message: /policy\.xml:\d+: character U\+0002 is not allowed in XML/,
  },
  {
    name: "include in an unknown XInclude namespace is left in place",
    files: {
      "policy.xml": profile('<x:include xmlns:x="http://www.w3.org/2000/XInclude" href="common/node.xml"/>'),
    },
    message: /<x:include> \(namespace/,
  },
];

function materialize(root: string, f: Fixture, i: number): string {
  const dir = join(root, String(i));
  cpSync(POLICIES, dir, { recursive: true });
  for (const [name, content] of Object.entries(f.files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), content);
  }
  return join(dir, f.main ?? "policy.xml");
}

test("every fixture is accepted or refused exactly as xmllint --xinclude --schema policy.xsd does, with a specific message", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  SAME.forEach((f, i) => {
    const file = materialize(dir.path, f, i);
    const peer = xmllintAccepts(file);
    const ours = readerAccepts(file);
    assert.equal(
      ours.ok,
      peer.ok,
      `${f.name}: reader ${ours.ok ? "accepts" : `refuses (${ours.message})`}, xmllint ` +
        `${peer.ok ? "accepts" : `refuses:\n${peer.stderr}`}`,
    );
    assert.equal(peer.ok, f.message === undefined, `${f.name}: the fixture is meant to be ${f.message ? "refused" : "accepted"}`);
    if (f.message) assert.match(ours.message, f.message, f.name);
  });
});

// Refused by the reader on purpose, whatever xmllint makes of them.
const BILLION_LAUGHS =
  '<?xml version="1.0"?>\n<!DOCTYPE policy [\n <!ENTITY a "aaaaaaaaaa">\n <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n' +
  ' <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">\n]>\n' +
  '<policy version="0.2.0"><enclaves><enclave path="/a"><profiles><profile ns="/" node="n">' +
  '<topics publish="ALLOW"><topic>&c;</topic></topics></profile></profiles></enclave></enclaves></policy>';
const HOSTILE: Fixture[] = [
  {
    name: "DOCTYPE with entities (billion laughs)",
    files: { "policy.xml": BILLION_LAUGHS },
    message: /policy\.xml:2: DOCTYPE declarations are not allowed/,
  },
  {
    name: "external entity (XXE)",
    files: {
      "policy.xml":
        '<!DOCTYPE policy [<!ENTITY x SYSTEM "file:///etc/passwd">]>' +
        profile('<topics publish="ALLOW"><topic>&x;</topic></topics>').replace(/^<\?xml[^>]*>\n/, ""),
    },
    message: /DOCTYPE declarations are not allowed/,
  },
  {
    name: "processing instruction",
    files: { "policy.xml": profile(`<?evil x?>${TALK}`) },
    message: /processing instruction <\?evil\?> is not allowed/,
  },
  {
    name: "stylesheet PI before the root",
    files: { "policy.xml": profile(TALK).replace("\n<policy", '\n<?xml-stylesheet href="x.xsl"?><policy') },
    message: /<\?xml-stylesheet\?> is not allowed/,
  },
  {
    name: "UTF-16",
    files: { "policy.xml": Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(profile(TALK).replace("UTF-8", "UTF-16"), "utf16le")]) },
    message: /the file is UTF-16; policy files must be UTF-8/,
  },
  {
    name: "ISO-8859-1 declared",
    files: { "policy.xml": profile(TALK).replace("UTF-8", "ISO-8859-1") },
    message: /encoding "ISO-8859-1"; policy files must be UTF-8/,
  },
  {
    name: "invalid UTF-8",
    files: { "policy.xml": Buffer.concat([Buffer.from(profile("<!-- ")), Buffer.from([0xc3, 0x28]), Buffer.from(" -->")]) },
    message: /not valid UTF-8/,
  },
  {
    name: "xpointer with //",
    files: { "policy.xml": profile('<xi:include href="common/node.xml" xpointer="xpointer(//topics)"/>') },
    message: /xpointer "xpointer\(\/\/topics\)" is not supported/,
  },
  {
    name: "element() scheme",
    files: { "policy.xml": profile('<xi:include href="common/node.xml" xpointer="element(/1/1)"/>') },
    message: /xpointer "element\(\/1\/1\)" is not supported/,
  },
  {
    name: "xpointer with a predicate",
    files: { "policy.xml": profile('<xi:include href="common/node.xml" xpointer="xpointer(/profile/*[1])"/>') },
    message: /is not supported; use the form xpointer\(\/a\/b\)/,
  },
  {
    name: 'parse="text"',
    files: { "policy.xml": profile('<topics publish="ALLOW"><topic><xi:include href="common/node.xml" parse="text"/></topic></topics>') },
    message: /xi:include parse="text" is not supported/,
  },
  {
    name: "xi:fallback",
    files: {
      "policy.xml": profile(
        '<xi:include href="common/nope.xml"><xi:fallback><topics publish="ALLOW"><topic>a</topic>' + "</topics></xi:fallback></xi:include>",
      ),
    },
    message: /xi:fallback is not supported/,
  },
  {
    name: "absolute href",
    files: { "policy.xml": profile('<xi:include href="/etc/passwd" parse="xml"/>') },
    message: /href "\/etc\/passwd" is an absolute path/,
  },
  {
    name: "URL href",
    files: { "policy.xml": profile('<xi:include href="http://example.com/p.xml"/>') },
    message: /is a URL; only relative file paths/,
  },
  { name: "file: URL href", files: { "policy.xml": profile('<xi:include href="file:///etc/hosts"/>') }, message: /is a URL/ },
  {
    name: "href leaving the policy's directory",
    files: { "policy.xml": profile('<xi:include href="../0/common/node.xml" xpointer="xpointer(/profile/*)"/>') },
    message: /leaves the policy's directory/,
  },
  { name: "href with a fragment", files: { "policy.xml": profile('<xi:include href="common/node.xml#x"/>') }, message: /has a fragment/ },
  {
    name: "local reference (no href)",
    files: { "policy.xml": profile('<xi:include xpointer="xpointer(/policy/*)"/>') },
    message: /needs an href/,
  },
  {
    name: "unknown xi:include attribute",
    files: { "policy.xml": profile('<xi:include href="common/node.xml" encoding="latin1"/>') },
    message: /xi:include attribute encoding is not supported/,
  },
  {
    name: "xsi:type",
    files: {
      "policy.xml": wrap(
        "<profiles><profile ns='/' node='n'/><metadata xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xsi:type='x'/></profiles>",
      ),
    },
    message: /xsi:type is not supported/,
  },
  ...[
    ["relative", /must start with "\/"/],
    ["/a/", /must not end with "\/"/],
    ["//a", /empty token/],
    ["/ns/1node", /token "1node" that starts with a digit/],
    ["/a b", /contains whitespace/],
    ["/a&#9;b", /contains control character U\+0009/],
    ["/ä", /contains "ä"/],
    ["/a-b", /contains "-"/],
    ["", /is empty/],
  ].map(
    ([path, message]) =>
      ({
        name: `enclave path "${path}"`,
        files: { "policy.xml": wrap("<profiles><profile ns='/' node='n'/></profiles>").replace('path="/ns/node"', `path="${path}"`) },
        message: new RegExp(`enclave path .*${(message as RegExp).source}`),
      }) as Fixture,
  ),
  ...[
    ["a b", /contains whitespace/],
    [" chatter", /contains whitespace/],
    ["a&lt;b", /contains "<"/],
    ["a&quot;", /contains "\\""/],
    ["a//b", /empty token/],
    ["~x", /"~\/"/],
    ["a~", /"~" may only be the first character/],
    ["/1a", /starts with a digit/],
    ["", /is empty/],
    ["a/", /must not end with/],
    ["{node}/x", /contains "\{"/],
  ].map(
    ([name, message]) =>
      ({
        name: `topic name "${name}"`,
        files: { "policy.xml": profile(`<topics publish="ALLOW"><topic>${name}</topic></topics>`) },
        message: new RegExp(`<topic>.*the name .*${(message as RegExp).source}`),
      }) as Fixture,
  ),
  {
    name: 'xml:base="DENY" on a rule (permissions.xsl would take it for a qualifier)',
    files: { "policy.xml": profile('<topics xml:base="DENY" publish="ALLOW"><topic>x</topic></topics>') },
    message: /<topics xml:base="DENY"> is refused/,
  },
  {
    name: "profile namespace that is relative",
    files: { "policy.xml": profile(TALK, 'ns="rel" node="n"') },
    message: /<profile ns="rel">: the namespace must start/,
  },
  {
    name: "node name with a slash",
    files: { "policy.xml": profile(TALK, 'ns="/" node="a/b"') },
    message: /<profile node="a\/b">: the node name contains "\/"/,
  },
];

test("hostile and unsupported input: each refused with its own specific message", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  HOSTILE.forEach((f, i) => {
    const file = materialize(dir.path, f, i);
    const ours = readerAccepts(file);
    assert.equal(ours.ok, false, `${f.name}: refused`);
    assert.match(ours.message, f.message!, f.name);
  });
});

test("an include through a symlink that leaves the policy's directory is refused", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const outside = join(dir.path, "outside");
  mkdirSync(outside);
  writeFileSync(join(outside, "p.xml"), '<profile><topics publish="ALLOW"><topic>a</topic></topics></profile>');
  const inside = join(dir.path, "policy");
  mkdirSync(inside);
  symlinkSync(join(outside, "p.xml"), join(inside, "link.xml"));
  writeFileSync(join(inside, "policy.xml"), profile('<xi:include href="link.xml" xpointer="xpointer(/profile/*)"/>'));
  assert.throws(() => readSros2PolicyFile(join(inside, "policy.xml")), /xi:include of "link.xml" leaves the policy's directory/);
});

test("limits: file size, total elements, include depth", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const big = join(dir.path, "big.xml");
  writeFileSync(big, profile(`<!-- ${"x".repeat(DEFAULT_LIMITS.maxFileBytes)} -->${TALK}`));
  assert.throws(() => readSros2PolicyFile(big), /big\.xml: the file is \d+ bytes; the limit for a policy file is 8388608/);

  const many = join(dir.path, "many.xml");
  writeFileSync(many, profile(`<topics publish="ALLOW">${"<topic>a</topic>".repeat(200)}</topics>`));
  assert.throws(() => readSros2PolicyFile(many, { ...DEFAULT_LIMITS, maxElements: 100 }), /more than 100 elements/);
  assert.doesNotThrow(() => readSros2PolicyFile(many));

  // A chain of 20 files, each including the next: deeper than the limit of 16.
  const chain = join(dir.path, "chain");
  mkdirSync(chain);
  for (let i = 0; i < 20; i++)
    writeFileSync(
      join(chain, `f${i}.xml`),
      i === 19
        ? `<profile>${TALK}</profile>`
        : '<profile xmlns:xi="http://www.w3.org/2001/XInclude">' +
            `<xi:include href="f${i + 1}.xml" xpointer="xpointer(/profile/*)"/></profile>`,
    );
  writeFileSync(join(chain, "policy.xml"), profile('<xi:include href="f0.xml" xpointer="xpointer(/profile/*)"/>'));
  assert.throws(() => readSros2PolicyFile(join(chain, "policy.xml")), /includes nest deeper than 16 levels/);
  assert.doesNotThrow(() => readSros2PolicyFile(join(chain, "policy.xml"), { ...DEFAULT_LIMITS, maxIncludeDepth: 25 }));
});

test("an include fan-out (XInclude's billion laughs) is refused before it is walked", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  // Each level includes the next one 10 times: 10^12 <topic> elements at the bottom from 13 small files.
  const inc = (i: number) => `<xi:include href="l${i}.xml" xpointer="xpointer(/topics/*)"/>`;
  for (let i = 0; i < 12; i++)
    writeFileSync(join(dir.path, `l${i}.xml`), `<topics xmlns:xi="http://www.w3.org/2001/XInclude">${inc(i + 1).repeat(10)}</topics>`);
  writeFileSync(join(dir.path, "l12.xml"), "<topics><topic>a</topic></topics>");
  writeFileSync(join(dir.path, "policy.xml"), profile(`<topics publish="ALLOW">${inc(0)}</topics>`));
  const t0 = Date.now();
  assert.throws(
    () => readSros2PolicyFile(join(dir.path, "policy.xml")),
    /l\d+\.xml:1: the policy has more than 500000 elements with its includes done/,
  );
  assert.ok(Date.now() - t0 < 20_000, "refused without building the expansion");
});

test("parseSros2Policy resolves includes against the base directory and reports errors against (policy)", () => {
  const p = parseSros2Policy(profile('<xi:include href="common/node/time.xml" xpointer="xpointer(/profile/*)"/>'), POLICIES);
  assert.deepEqual(p.enclaves[0]!.profileSets[0]![0]!.rules, [{ kind: "topics", subscribe: "ALLOW", names: ["/clock"] }]);
  assert.throws(
    () => parseSros2Policy(profile('<topics publish="ALLOW"/>'), POLICIES),
    /: \(policy\):\d+: <topics> needs at least one <topic>/,
  );
});

test("the CLI refuses a bad policy with one error line naming file and line, and prints no partial document", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const cases: [Fixture, RegExp][] = [
    [
      SAME.find((f) => f.name === "include of a missing file")!,
      /^fleetpki: .*policy\.xml:\d+: xi:include of "common\/nope\.xml": no such file/,
    ],
    [HOSTILE[0]!, /^fleetpki: .*policy\.xml:2: DOCTYPE declarations are not allowed/],
    [SAME.find((f) => f.name === "qualifier in lower case")!, /^fleetpki: .*policy\.xml:\d+: <topics publish="allow">/],
    [HOSTILE.find((f) => f.name === 'enclave path "/a/"')!, /^fleetpki: .*policy\.xml:\d+: enclave path "\/a\/" must not end with "\/"/],
  ];
  cases.forEach(([f, pattern], i) => {
    const r = cli(["ros2", "permissions", materialize(dir.path, f, i)]);
    assert.equal(r.status, 1, f.name);
    assert.equal(r.stdout, "", `${f.name}: nothing on stdout`);
    assert.match(r.stderr.trimEnd(), pattern);
    assert.equal(r.stderr.trimEnd().split("\n").length, 1);
  });
  const missing = cli(["ros2", "permissions", join(dir.path, "nope.xml")]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /nope\.xml: no such file/);
});
