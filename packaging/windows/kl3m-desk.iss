; Inno Setup 6 script of the kl3m-desk installer for Windows x64: a per-user install of the
; PyInstaller onedir build in dist\kl3m-desk\ that needs no administrator rights.
;
; Build dist\kl3m-desk\ first with `python packaging\build.py` on Windows, then run
;
;     iscc /DAppVersion=0.1.0 [/DLongestFilePath=N /DLongestFolderPath=N] packaging\windows\kl3m-desk.iss
;
; to write dist\kl3m-desk-<AppVersion>-windows-x64-setup.exe. .github/workflows/release.yml passes
; all three values.
;
; Inno Setup is used rather than NSIS or MSI because those fail on payloads above about 2 GB,
; which a bundled model exceeds. Inno Setup needs DiskSpanning (Setup-*.bin files next to the .exe)
; only when the compressed payload exceeds 4,200,000,000 bytes.

#if Ver < EncodeVer(6, 3, 0)
  #error Inno Setup 6.3 or later is required: this script uses ArchitecturesAllowed=x64compatible.
#endif

#ifndef AppVersion
  ; Keep equal to kl3m_desk.__version__ for builds that do not pass /DAppVersion.
  #define AppVersion "0.1.0"
#endif

; Lengths in characters of the longest file path and the longest folder path inside
; dist\kl3m-desk\, relative to that folder. The [Code] section uses them to reject an install
; folder below which a path would exceed the Windows limits.
; NOTE: the defaults were measured on the Linux 0.1.0 build, where both are torch licence files
; under _internal\torch-2.13.0+cpu.dist-info; release.yml measures the Windows build instead.
#ifndef LongestFilePath
  #define LongestFilePath "181"
#endif
#ifndef LongestFolderPath
  #define LongestFolderPath "170"
#endif

#define AppName "kl3m-desk"
#define AppExe "kl3m-desk.exe"
#define BuildDir AddBackslash(SourcePath) + "..\..\dist\kl3m-desk"
#define IconFile AddBackslash(SourcePath) + "kl3m-desk.ico"

#if !FileExists(BuildDir + "\" + AppExe)
  #error dist\kl3m-desk\kl3m-desk.exe not found. Build it first with: python packaging\build.py
#endif

[Setup]
; AppId identifies the installation across versions (upgrades, uninstall); never change it.
AppId={{10AA682A-0C39-436F-8F01-D66983393160}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=kl3m-desk developers
UninstallDisplayName={#AppName}
UninstallDisplayIcon={app}\{#AppExe}
#if FileExists(IconFile)
SetupIconFile={#IconFile}
#endif

; Per-user install without a UAC prompt: with PrivilegesRequired=lowest Setup always runs in
; non-administrative install mode, and registry entries go to HKCU.
; The folder is {localappdata}\Programs\kl3m-desk. In this mode {autopf} means {userpf}, the
; known folder UserProgramFiles, which is the same %LOCALAPPDATA%\Programs by default. {autopf} is
; not used because that known-folder lookup can fail where %LOCALAPPDATA% works: Wine 8 cannot
; expand it (Setup stops with an internal error), and a user of another Inno Setup installer
; reported it resolving to a different profile's folder on a domain-joined machine.
PrivilegesRequired=lowest
DefaultDirName={localappdata}\Programs\{#AppName}
DisableProgramGroupPage=yes

; Paths and MAX_PATH. Unless a program declares itself long-path aware and the machine enables
; long paths, Windows limits a path to 259 characters and a folder that it creates to 247, and
; torch nests some files deeply. The layout keeps paths short: the default folder
; %LOCALAPPDATA%\Programs\kl3m-desk adds 34 characters to the profile folder (C:\Users\<name>),
; the app folder holds only kl3m-desk.exe and _internal\ (PyInstaller onedir), and the build leaves
; out torch's include, test and share folders (packaging/kl3m-desk.spec). With the measured longest
; file path of 181 characters and folder path of 170, a profile folder of up to 43 characters
; fits (a user name of up to 34).
; [Code] rejects an install folder for which a path would exceed either limit.
; The folder page appears on the first install only (DisableDirPage=auto): an upgrade reuses the
; previous folder (UsePreviousAppDir=yes), and PrepareToInstall checks that folder again.
DisableDirPage=auto
UsePreviousAppDir=yes

; 64-bit only. x64compatible also admits Windows 11 on Arm, which runs x64 programs in emulation.
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
; Windows 10 1809 (build 17763) is the oldest Windows that Qt 6 supports.
MinVersion=10.0.17763

SourceDir=..\..
OutputDir=dist
OutputBaseFilename={#AppName}-{#AppVersion}-windows-x64-setup
Compression=lzma2
SolidCompression=yes
; The 32-bit compiler then compresses in a separate 64-bit process on x64 Windows, so a payload of
; several GB is not limited by its address space. The 64-bit compiler ignores this directive.
LZMAUseSeparateProcess=yes
WizardStyle=modern
; Closes a running kl3m-desk (Restart Manager) before its files are replaced.
CloseApplications=yes
ChangesAssociations=WizardIsTaskSelected('associatedocx')

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "associatedocx"; Description: "Offer {#AppName} in ""Open with"" for Word documents (.docx)"; GroupDescription: "File types:"; Flags: unchecked

[InstallDelete]
; An upgrade first removes the previous build's libraries: a file that the new build no longer
; ships (a module of an older torch, say) would otherwise stay next to the new files, and Python
; can still import a stale extension module.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "dist\kl3m-desk\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"; Comment: "Offline drafting editor"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Comment: "Offline drafting editor"; Tasks: desktopicon

[Registry]
; The .docx task registers kl3m-desk as a handler of .docx for the current user: a ProgID, an
; entry in .docx\OpenWithProgids and Applications\kl3m-desk.exe\SupportedTypes. It does not take
; over the default program. Since Windows 8 the default is the user's choice, stored with a hash
; that only Windows writes, so Windows offers kl3m-desk in "Open with" and asks the user.
; NOTE: kl3m-desk 0.1.0 opens only UTF-8 .txt and .md files (kl3m_desk/documents.py); a .docx
; opened through this entry shows an error until the app can read .docx.
Root: HKCU; Subkey: "Software\Classes\kl3m-desk.docx"; ValueType: string; ValueName: ""; ValueData: "Word document"; Flags: uninsdeletekey; Tasks: associatedocx
Root: HKCU; Subkey: "Software\Classes\kl3m-desk.docx\DefaultIcon"; ValueType: string; ValueName: ""; ValueData: "{app}\{#AppExe},0"; Tasks: associatedocx
Root: HKCU; Subkey: "Software\Classes\kl3m-desk.docx\shell\open\command"; ValueType: string; ValueName: ""; ValueData: """{app}\{#AppExe}"" ""%1"""; Tasks: associatedocx
Root: HKCU; Subkey: "Software\Classes\.docx\OpenWithProgids"; ValueType: string; ValueName: "kl3m-desk.docx"; ValueData: ""; Flags: uninsdeletevalue; Tasks: associatedocx
Root: HKCU; Subkey: "Software\Classes\Applications\{#AppExe}"; ValueType: string; ValueName: "FriendlyAppName"; ValueData: "{#AppName}"; Flags: uninsdeletekey; Tasks: associatedocx
Root: HKCU; Subkey: "Software\Classes\Applications\{#AppExe}\SupportedTypes"; ValueType: string; ValueName: ".docx"; ValueData: ""; Tasks: associatedocx

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
const
  // MAX_PATH is 260 characters including the terminating null character, and a folder that the
  // Windows API creates must leave room for an 8.3 file name: MAX_PATH minus 12.
  MaxPathLength = 259;
  MaxFolderPathLength = 247;
  LongestFilePath = {#LongestFilePath};
  LongestFolderPath = {#LongestFolderPath};

// Return how many characters Folder could grow before the build's longest file or folder path
// below it exceeds a Windows limit. A negative result means Folder is too long by that much.
function FolderLengthMargin(const Folder: String): Integer;
var
  Prefix: Integer;
begin
  Prefix := Length(AddBackslash(Folder));
  Result := MaxPathLength - (Prefix + LongestFilePath);
  if MaxFolderPathLength - (Prefix + LongestFolderPath) < Result then
    Result := MaxFolderPathLength - (Prefix + LongestFolderPath);
end;

function IsFolderTooLong(const Folder: String): Boolean;
begin
  Result := FolderLengthMargin(Folder) < 0;
end;

function FolderTooLongMessage(const Folder: String): String;
begin
  // A line may not start with "[" in any section, [Code] included: Inno Setup reads it as a
  // section tag.
  Result := Format('The folder %s is too long for {#AppName}: some of its files would exceed ' +
    'the Windows path length limit. Shorten the folder path by at least %d, or choose a folder ' +
    'such as C:\{#AppName}.', [
    Folder, -FolderLengthMargin(Folder)]);
end;

// Keep the user on the folder page until the folder is short enough. A silent install simulates
// this click, so a /DIR= that is too long stops Setup with exit code 1.
function NextButtonClick(CurPageID: Integer): Boolean;
begin
  Result := True;
  if (CurPageID = wpSelectDir) and IsFolderTooLong(WizardDirValue) then begin
    SuppressibleMsgBox(FolderTooLongMessage(WizardDirValue), mbError, MB_OK, IDOK);
    Result := False;
  end;
end;

// Check again before any file is written. This covers an upgrade, which skips the folder page and
// may ship longer paths than the version installed; Setup then stops with this message (exit code
// 7 when silent) and leaves the installed version as it was.
function PrepareToInstall(var NeedsRestart: Boolean): String;
begin
  Result := '';
  if IsFolderTooLong(ExpandConstant('{app}')) then
    Result := FolderTooLongMessage(ExpandConstant('{app}'));
end;
